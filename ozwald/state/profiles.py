# SPDX-License-Identifier: AGPL-3.0-or-later
"""The profiling queue behind /srv/services/profile.

Profiling (measuring a service's real VRAM, RAM and start time) must run while the host is otherwise
idle, so requests wait in a queue (a file in the state directory, copied to Redis) until the provisioner
gets to them. It is FIFO, bounded (a runaway client must not fill the disk or Redis), and checked against
the settings at the door, so a typo is answered at once rather than discovered hours later when the
profiler runs.

The profiler reads `first()`, marks it running, and `finish()`es it when its result is recorded: a
request then survives a crash or a restart instead of being lost with it. An update that preempts a run
puts the item back at the front (`requeue_front`).
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ozwald.config.model import Settings
from ozwald.config.values import Name
from ozwald.records import UpdateError
from ozwald.state.durable import DurableDocument, Revisioned
from ozwald.state.errors import QueueFull, first_validation_error
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.resp import Client

log = logging.getLogger(__name__)

MAX_PENDING = 1000


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
    item_id: str = ""
    request_items: int = 1  # how many items the request that queued this one has
    state: Literal["queued", "running"] = "queued"
    phase: str = "queued"  # what the profiler is doing with it (starting, holding, stopping, or why it waits)
    phase_since: datetime | None = None
    attempts: int = 0
    preempted: int = 0  # how often an update stopped its run

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


class ProfileQueueDocument(Revisioned):
    items: builtins.list[ProfileRequest] = Field(default_factory=builtins.list)


class ProfileQueue:
    """Profiling requests of one provisioner, oldest first; the first may be running.

    Kept in `<state_dir>/profiles-<provisioner>.json`, copied to Redis, by the desired set's rules (see
    `ozwald.state.durable`): the queue survives a restart of the provisioner and of Redis.
    One POST may queue several items (service × variety × profile); they share its `request_id` and each has
    its own `item_id`.
    """

    def __init__(self, redis: Client, provisioner: str, *, settings: Settings | None = None,
                 max_pending: int = MAX_PENDING, prefix: str = DEFAULT_PREFIX, state_dir: Path | str) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.keys = Keyspace(provisioner, prefix)
        self.settings = settings
        self.max_pending = max_pending
        path = Path(state_dir) / f"profiles-{provisioner}.json"
        self.document = DurableDocument(redis, self.keys.profile_queue, path, ProfileQueueDocument,
                                        "the profiling queue")

    def enqueue(self, request: Any) -> str:
        """Validate (against the settings, if the queue has them) and append; returns the new id.

        Raises UpdateError for a bad request and QueueFull when `max_pending` requests already wait.
        """
        return self.enqueue_many([validate_profile_request(request, self.settings)])

    def enqueue_many(self, bodies: Sequence[ProfileRequestBody]) -> str:
        """Append every body as one request (all or nothing); returns the request id they share."""
        if not bodies:
            raise UpdateError(None, "services", "nothing to profile")
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        items = [ProfileRequest(request_id=request_id, requested_at=now, item_id=uuid.uuid4().hex,
                                request_items=len(bodies), **body.model_dump()) for body in bodies]

        def append(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            if len(doc.items) + len(items) > self.max_pending:
                raise QueueFull(f"{len(doc.items)} profiling requests are pending (at most {self.max_pending}); "
                                "retry after some complete")
            return doc.model_copy(update={"items": [*doc.items, *items]})

        self.document.update(append)
        return request_id

    def requests(self) -> builtins.list[ProfileRequest]:
        return builtins.list(self.document.read().items)

    def list(self) -> builtins.list[dict[str, Any]]:
        """GET /srv/services/profile: the requests, oldest first, with position, state and progress."""
        items = self.requests()
        out = []
        for position, item in enumerate(items):
            entry = item.model_dump(mode="json")
            left = sum(1 for other in items if other.request_id == item.request_id)
            entry["position"] = position
            entry["progress"] = {"request_items": item.request_items, "request_items_done": item.request_items - left,
                                 "phase": item.phase, "phase_since": entry.pop("phase_since")}
            del entry["phase"]
            out.append(entry)
        return out

    def count(self) -> int:
        return len(self.requests())

    def first(self) -> ProfileRequest | None:
        items = self.requests()
        return items[0] if items else None

    def pop(self) -> ProfileRequest | None:
        """Take the oldest request off the queue (prefer first() + finish() to survive a crash)."""
        taken: builtins.list[ProfileRequest] = []

        def take(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            taken[:] = doc.items[:1]
            return doc.model_copy(update={"items": doc.items[1:]})

        self.document.update(take)
        return taken[0] if taken else None

    def remove(self, request_id: str) -> bool:
        """Drop the request with this id (every item of it); False if it is not (or no longer) queued."""
        return self._drop(lambda item: item.request_id == request_id)

    def finish(self, item_id: str) -> bool:
        """Drop one item: its run ended (measured or failed)."""
        return self._drop(lambda item: item.item_id == item_id)

    def mark(self, item_id: str, phase: str, *, running: bool = True, attempt: bool = False) -> None:
        """Record that the item is running (or queued again), in which phase, since now."""
        def change(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            items = []
            for item in doc.items:
                if item.item_id == item_id:
                    item = item.model_copy(update={
                        "state": "running" if running else "queued", "phase": phase,
                        "phase_since": datetime.now(UTC), "attempts": item.attempts + (1 if attempt else 0)})
                items.append(item)
            return doc.model_copy(update={"items": items})

        self.document.update(change)

    def requeue_front(self, item_id: str, why: str) -> None:
        """Preempted: the item goes back to the front of the queue, queued, saying why."""
        def change(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            found = [i for i in doc.items if i.item_id == item_id]
            rest = [i for i in doc.items if i.item_id != item_id]
            again = [i.model_copy(update={"state": "queued", "phase": why, "phase_since": datetime.now(UTC),
                                          "preempted": i.preempted + 1}) for i in found]
            return doc.model_copy(update={"items": again + rest})

        self.document.update(change)

    def reset_running(self) -> None:
        """At start-up: an item a previous process was running is queued again (its run is lost)."""
        if not any(item.state == "running" for item in self.requests()):
            return

        def change(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            return doc.model_copy(update={"items": [
                i.model_copy(update={"state": "queued", "phase": "queued again: the provisioner restarted",
                                     "phase_since": datetime.now(UTC)}) if i.state == "running" else i
                for i in doc.items]})

        self.document.update(change)

    def _drop(self, match: Callable[[ProfileRequest], bool]) -> bool:
        if not any(match(item) for item in self.requests()):
            return False
        dropped: builtins.list[bool] = []

        def change(doc: ProfileQueueDocument) -> ProfileQueueDocument:
            kept = [i for i in doc.items if not match(i)]
            dropped[:] = [len(kept) != len(doc.items)]
            return doc.model_copy(update={"items": kept})

        self.document.update(change)
        return bool(dropped and dropped[0])


