# SPDX-License-Identifier: AGPL-3.0-or-later
"""A small JSON document kept in Redis and in a local file, with the desired set's durability rules.

The profiling queue and the profiling results must survive a provisioner restart and a Redis restart
(the provisioner's Redis runs without persistence). Like the desired set, each document carries a
`revision` that grows with every change: Redis holds the live copy, the file `<state_dir>/<name>.json`
the durable one. A read that finds the file newer than Redis (Redis came back empty) restores Redis from
it; a change starts from the newer of the two, so the revision sequence never restarts at 1.

Changes are read-modify-write under `WATCH`, retried when another writer got in between, so concurrent
API threads and the profiler never lose each other's changes. The file is written under a lock and only
with a newer revision than it has, so writers finishing out of order leave the newest document on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import pydantic
from pydantic import BaseModel

from ozwald.files import atomic_write, locked
from ozwald.state.errors import StateCorrupt, StateError, describe_validation_error
from ozwald.state.redis_conn import redis_errors
from ozwald.state.resp import Client, Command, Watched

log = logging.getLogger(__name__)


class Revisioned(BaseModel):
    revision: int = 0


D = TypeVar("D", bound=Revisioned)


class DurableDocument(Generic[D]):
    """One document of type `model`, at Redis `key` and (with a `path`) in a local file."""

    def __init__(self, redis: Client, key: str, model: type[D], path: Path | None, what: str) -> None:
        self.redis = redis
        self.key = key
        self.model = model
        self.path = path
        self.what = what
        self._lock_path = path.with_name(f".{path.name}.lock") if path is not None else None

    def read(self) -> D:
        """The newest of the Redis and file copies (Redis restored from the file when the file is newer)."""
        with redis_errors(self.redis, f"reading {self.what}"):
            raw = self.redis.get(self.key)
        current = self._parse(raw, f"Redis key {self.key}") if raw is not None else None
        local = self._local_quietly(current)
        if local is not None and local.revision > (current.revision if current is not None else 0):
            self._restore(local)
            return local
        if current is not None:
            if self.path is not None and (local is None or current.revision > local.revision):
                self._save_quietly(current)
            return current
        return self.model()

    def read_local(self) -> D | None:
        if self.path is None:
            return None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        return self._parse(text, str(self.path))

    def update(self, change: Callable[[D], D]) -> D:
        """Apply `change` to the newest copy and store the result with the next revision; returns it.

        `change` may run more than once (when another writer got in between) and may raise to abort.
        """
        written: list[D] = []

        def attempt(watched: Watched) -> list[Command]:
            raw = watched.get(self.key)
            current = self._parse(raw, f"Redis key {self.key}") if raw is not None else None
            local = self._local_quietly(current)
            base = current
            if local is not None and local.revision > (current.revision if current is not None else 0):
                base = local
            base = base if base is not None else self.model()
            written[:] = [change(base).model_copy(update={"revision": base.revision + 1})]
            return [("SET", self.key, written[0].model_dump_json())]

        with redis_errors(self.redis, f"changing {self.what}"):
            self.redis.transaction([self.key], attempt)  # again from the top whenever another writer got in
        new = written[0]
        if self.path is not None:
            try:
                self.save_local(new)
            except OSError as exc:
                raise StateError(f"{self.what} revision {new.revision} is live in Redis but was not saved to "
                                 f"{self.path}: {exc}") from exc
        return new

    def save_local(self, document: D) -> bool:
        if self.path is None or self._lock_path is None:
            return False
        local = self.read_local
        return write_if_newer(self.path, self._lock_path, document.model_dump_json(indent=2) + "\n",
                              document.revision, lambda: (d.revision if (d := local()) is not None else None),
                              "revision")

    def _restore(self, local: D) -> None:
        # Only if Redis still has nothing newer: a restore racing a change must not roll it back.
        def attempt(watched: Watched) -> list[Command]:
            raw = watched.get(self.key)
            current = self._parse(raw, f"Redis key {self.key}") if raw is not None else None
            if current is not None and current.revision >= local.revision:
                return []
            return [("SET", self.key, local.model_dump_json())]

        with redis_errors(self.redis, f"restoring {self.what} from {self.path}"):
            if self.redis.transaction([self.key], attempt) is not None:
                log.info("restored %s (revision %d) from %s into Redis", self.what, local.revision, self.path)

    def _local_quietly(self, current: D | None) -> D | None:
        try:
            return self.read_local()
        except StateError as exc:
            if current is None:
                raise
            log.warning("%s; rewriting it from Redis (revision %d)", exc, current.revision)
            return None

    def _save_quietly(self, document: D) -> None:
        try:
            self.save_local(document)
        except OSError as exc:
            log.warning("cannot save %s revision %d to %s: %s", self.what, document.revision, self.path, exc)

    def _parse(self, text: str, where: str) -> D:
        try:
            return self.model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise StateCorrupt(f"{self.what} in {where} is damaged: {describe_validation_error(exc)}", where) from None


def write_if_newer(path: Path, lock_path: Path, text: str, number: int, on_disk: Callable[[], int | None],
                   what: str) -> bool:
    """Write `text` (numbered `number`) unless the file already holds that number or a newer one; True if
    written. The compare and the write happen under a lock, so writers finishing out of order never move
    the file back; a damaged file is overwritten, with a warning."""
    with locked(lock_path):
        try:
            current = on_disk()
        except StateError as exc:
            log.warning("%s; overwriting it with %s %d", exc, what, number)
            current = None
        if current is not None and current >= number:
            return False
        atomic_write(path, text)
        return True
