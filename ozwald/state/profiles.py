# SPDX-License-Identifier: AGPL-3.0-or-later
"""The profiling queue behind /srv/services/profile.

Profiling (measuring a service's real VRAM, RAM and start time) must run while the host is otherwise
idle, so requests wait in a Redis list until the provisioner gets to them. The list is FIFO, bounded
(a runaway client must not fill Redis), and checked against the settings at the door, so a typo is
answered at once rather than discovered hours later when the profiler runs.

A profiler should read `requests()`, run the first, and `remove()` it when done: a request then
survives a crash of the profiler instead of being lost with it.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pydantic
import redis
from pydantic import BaseModel, ConfigDict, Field

from ozwald.config.model import Settings
from ozwald.config.values import Name
from ozwald.records import UpdateError
from ozwald.state.errors import QueueFull, describe_validation_error, first_validation_error
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.redis_conn import LuaScript, redis_errors

log = logging.getLogger(__name__)

MAX_PENDING = 1000

# KEYS: the queue. ARGV: the request, the bound. The length check and the push are one step, so
# concurrent enqueuers cannot overshoot the bound together.
_ENQUEUE = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""


class ProfileRequestBody(BaseModel):
    """What a client posts: which service to profile, optionally in which variety and profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Name
    variety: Name | None = None
    profile: Name | None = None


class ProfileRequest(ProfileRequestBody):
    """A queued request: the body plus the id and time the server assigned.

    The field names are the predecessor's (`request_id`, `requested_at`), which orchestrators reading
    GET /srv/services/profile already know; `id` and `queued_at` are read-only synonyms for Python code.
    """

    request_id: str = Field(min_length=1)
    requested_at: datetime

    @property
    def id(self) -> str:
        return self.request_id

    @property
    def queued_at(self) -> datetime:
        return self.requested_at


def validate_profile_request(request: Any, settings: Settings | None = None) -> ProfileRequestBody:
    """Parse `request` (JSON as sent, or a body model) and, given `settings`, check what it names exists.

    Every problem is an UpdateError with index None, the error the API already answers with 400.
    """
    if isinstance(request, ProfileRequestBody):
        body = ProfileRequestBody(service=request.service, variety=request.variety, profile=request.profile)
    elif not isinstance(request, Mapping):
        raise UpdateError(None, "body", "a profiling request is a JSON object")
    else:
        try:
            body = ProfileRequestBody.model_validate(request)
        except pydantic.ValidationError as exc:
            field, message = first_validation_error(exc)
            raise UpdateError(None, field, message) from None
    if settings is None:
        return body
    service = settings.service(body.service)
    if service is None:
        configured = ", ".join(s.name for s in settings.services) or "none"
        raise UpdateError(None, "service", f"unknown service {body.service!r}; configured: {configured}")
    if service.type != "container":
        raise UpdateError(None, "service", f"service {service.name!r} is a {service.type} resource; "
                                           "only container services can be profiled")
    if body.variety is not None and body.variety not in service.varieties:
        known = ", ".join(service.varieties) or "none"
        raise UpdateError(None, "variety", f"service {service.name!r} has no variety {body.variety!r}; "
                                           f"its varieties: {known}")
    if body.profile is not None and body.profile not in service.profiles:
        known = ", ".join(service.profiles) or "none"
        raise UpdateError(None, "profile", f"service {service.name!r} has no profile {body.profile!r}; "
                                           f"its profiles: {known}")
    return body


class ProfileQueue:
    """Pending profiling requests of one provisioner, oldest first."""

    def __init__(self, redis: redis.Redis, provisioner: str, *, settings: Settings | None = None,
                 max_pending: int = MAX_PENDING, prefix: str = DEFAULT_PREFIX) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.redis = redis
        self.keys = Keyspace(provisioner, prefix)
        self.settings = settings
        self.max_pending = max_pending
        self._enqueue = LuaScript(redis, _ENQUEUE)

    def enqueue(self, request: Any) -> str:
        """Validate (against the settings, if the queue has them) and append; returns the new id.

        Raises UpdateError for a bad request and QueueFull when `max_pending` requests already wait.
        """
        body = validate_profile_request(request, self.settings)
        queued = ProfileRequest(request_id=uuid.uuid4().hex, requested_at=datetime.now(UTC), **body.model_dump())
        with redis_errors(self.redis, "queueing a profiling request"):
            accepted = int(self._enqueue([self.keys.profiles], [queued.model_dump_json(), self.max_pending]))
        if not accepted:
            raise QueueFull(f"{self.max_pending} profiling requests are already pending; retry after some complete")
        return queued.id

    def requests(self) -> builtins.list[ProfileRequest]:
        return [request for _, request in self._items()]

    def list(self) -> builtins.list[dict[str, Any]]:
        """The pending requests as JSON-ready dicts, oldest first: the body of GET /srv/services/profile."""
        return [request.model_dump(mode="json") for request in self.requests()]

    def count(self) -> int:
        with redis_errors(self.redis, "counting profiling requests"):
            return int(self.redis.llen(self.keys.profiles))

    def pop(self) -> ProfileRequest | None:
        """Take the oldest request off the queue (prefer requests() + remove() to survive a crash)."""
        while True:
            with redis_errors(self.redis, "taking a profiling request"):
                raw = self.redis.lpop(self.keys.profiles)
            if raw is None:
                return None
            request = _decode(str(raw), self.keys.profiles)
            if request is not None:
                return request

    def remove(self, request_id: str) -> bool:
        """Drop the request with this id; False if it is not (or no longer) queued."""
        for raw, request in self._items():
            if request.request_id == request_id:
                with redis_errors(self.redis, "removing a profiling request"):
                    return int(self.redis.lrem(self.keys.profiles, 1, raw)) > 0
        return False

    def _items(self) -> builtins.list[tuple[str, ProfileRequest]]:
        with redis_errors(self.redis, "listing profiling requests"):
            raw_items = self.redis.lrange(self.keys.profiles, 0, -1)
        items = []
        for raw in raw_items:
            request = _decode(str(raw), self.keys.profiles)
            if request is not None:
                items.append((str(raw), request))
        return items


def _decode(text: str, where: str) -> ProfileRequest | None:
    """A damaged entry is logged and skipped: it must not block every request queued behind it."""
    try:
        return ProfileRequest.model_validate_json(text)
    except pydantic.ValidationError as exc:
        log.warning("skipping a damaged profiling request in %s: %s", where, describe_validation_error(exc))
        return None
