# SPDX-License-Identifier: AGPL-3.0-or-later
"""The status cache: what GET /srv/services/active/ answers, without asking systemd on every request.

systemd is the truth; the provisioner replaces what the reconciler observed here, and a process that has
not reconciled yet reads it back. One Redis hash per provisioner, one field per instance, replaced in one
transaction, so a reader gets all of them at once and never a half-replaced set. Being a cache, a
damaged entry is logged and skipped rather than failing the whole answer: the next observation rewrites
it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pydantic

from ozwald.records import ActiveService
from ozwald.state.errors import StateError
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.redis_conn import redis_errors
from ozwald.state.resp import Client

log = logging.getLogger(__name__)

StatusEntry = ActiveService | Mapping[str, Any]


class StatusCache:
    def __init__(self, redis: Client, provisioner: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.keys = Keyspace(provisioner, prefix)

    def replace_all(self, services: Mapping[str, StatusEntry]) -> None:
        """Make the cache exactly `services`, atomically: for a reconciler that has observed everything.

        Readers never see a half-replaced cache, and entries of instances that disappeared go away.
        """
        fields = _encode(services)
        with redis_errors(self.redis, "replacing service status"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(self.keys.status)
            if fields:
                pipe.hset(self.keys.status, fields)
            pipe.execute()

    def reachable(self) -> bool:
        """Whether Redis answers a PING (the health endpoint's `cache`)."""
        try:
            with redis_errors(self.redis, "pinging"):
                return self.redis.ping()
        except StateError:
            return False

    def read_all(self) -> list[ActiveService]:
        """Every cached entry, sorted by instance name (a stable order for API answers and diffs)."""
        with redis_errors(self.redis, "reading service status"):
            raw = self.redis.hgetall(self.keys.status)
        out = []
        for name in sorted(raw):
            service = _decode(name, raw[name])
            if service is not None:
                out.append(service)
        return out


def _encode(services: Mapping[str, StatusEntry]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, entry in services.items():
        service = entry if isinstance(entry, ActiveService) else ActiveService.model_validate(entry)
        if service.name != name:
            raise ValueError(f"status entry {name!r} describes instance {service.name!r}")
        fields[name] = service.model_dump_json()
    return fields


def _decode(name: str, text: str) -> ActiveService | None:
    try:
        return ActiveService.model_validate_json(text)
    except pydantic.ValidationError as exc:
        log.warning("skipping damaged status entry %r: %s", name, exc.errors()[:1])
        return None
