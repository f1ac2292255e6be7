# SPDX-License-Identifier: AGPL-3.0-or-later
"""A JSON document the provisioner owns: a file in the state directory is the truth, Redis holds a copy.

The desired set, the profiling queue and the profiling results each are one such document. Only `ozwald
serve` writes them, from one process, so one lock in that process orders every change: a change is read,
modified, numbered (`generation` or `revision`, one more than the last) and written to the file
(atomically, fsynced) under the lock, so racing threads lose no update and never share a number. Reads
are answered from memory, never from Redis, so a Redis that is down delays no read.

Redis gets a copy after the file, for readers who want one; a copy that fails (Redis down) is only
logged, since the file already holds the change, and `sync_cache()` puts it back once Redis is there
again (the provisioner calls it every few seconds, so a Redis restarted empty is refilled). At start the
copy is read once: a lost or damaged file is recovered from it, and numbering continues above the
highest number either holds, so numbers only grow, across restarts of the provisioner and of Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import pydantic
from pydantic import BaseModel

from ozwald.files import atomic_write
from ozwald.state.errors import StateCorrupt, StateError, describe_validation_error
from ozwald.state.redis_conn import redis_errors
from ozwald.state.resp import Client

log = logging.getLogger(__name__)

D = TypeVar("D", bound=BaseModel)


class Revisioned(BaseModel):
    revision: int = 0


class DurableDocument(Generic[D]):
    """One document of type `model` in `path` (the truth) and at Redis `key` (a copy); thread-safe.

    `number` names the model's field that grows with every change.
    """

    def __init__(self, redis: Client, key: str, path: Path, model: type[D], what: str, *,
                 number: str = "revision") -> None:
        self.redis = redis
        self.key = key
        self.path = path
        self.model = model
        self.what = what
        self.number = number
        self._lock = threading.Lock()  # orders changes; held while the file is written
        self._doc: D | None = None  # the newest document, once loaded
        self._last = 0  # the highest number seen: the next change gets the one above
        self._copy_lock = threading.Lock()
        self._copied: str | None = None  # what Redis is known to hold (None: unknown)
        self._copy_failed = False  # logged once, until a copy succeeds again

    def read(self) -> D:
        with self._lock:
            return self._load()

    def update(self, change: Callable[[D], D], *, whole: bool = False) -> D:
        """Apply `change` (which may raise to abort) to the newest document, store the result with the next
        number, then copy it to Redis; returns it. StateError if the file cannot be written: nothing changed.
        A change that replaces the `whole` document also replaces a damaged one (with a warning)."""
        with self._lock:
            current = self._load(whole=whole)
            new = change(current).model_copy(update={self.number: self._last + 1})
            try:
                atomic_write(self.path, new.model_dump_json(indent=2) + "\n")
            except OSError as exc:
                raise StateError(f"cannot save {self.what} to {self.path}: {exc}; nothing was changed") from exc
            self._doc, self._last = new, self._last + 1
        self.sync_cache(ask=False)
        return new

    def sync_cache(self, *, ask: bool = True) -> bool:
        """Make Redis' copy the newest document; with `ask`, ask Redis what it holds first (it may have
        restarted empty). False, logged, if Redis cannot be reached: the next call tries again."""
        with self._copy_lock:  # one copy at a time, always of the newest: copies cannot land out of order
            with self._lock:
                text = self._load().model_dump_json()
            try:
                with redis_errors(self.redis, f"copying {self.what} to Redis"):
                    if ask:
                        self._copied = self.redis.get(self.key)
                    if self._copied != text:
                        self.redis.set(self.key, text)
                        self._copied = text
            except StateError as exc:
                if not self._copy_failed:
                    log.warning("%s; %s keeps it, the copy follows once Redis answers", exc, self.path)
                self._copied, self._copy_failed = None, True
                return False
            if self._copy_failed:
                log.info("%s copied to Redis again", self.what)
            self._copy_failed = False
            return True

    def _load(self, *, whole: bool = False) -> D:
        """The newest document (under `_lock`): from memory, or at first from the file, the truth. Redis' copy
        is read this once: it stands in for a missing or damaged file, and numbering goes on above its number
        too. Damage with no good copy is an error, never an empty document (the desired set's would stop
        every service), unless a change replaces the `whole` document."""
        if self._doc is not None:
            return self._doc
        copy = self._cached_copy()
        good = copy if not isinstance(copy, StateCorrupt) else None
        try:
            doc = self._read_file()
        except StateError as exc:
            if good is None and not whole:
                raise
            log.warning("%s; %s", exc, "recovered from the copy in Redis" if good is not None else "replacing it")
            doc = None
        if doc is None and isinstance(copy, StateCorrupt) and not whole:
            raise copy
        if doc is None and good is not None:
            doc = good
            try:
                atomic_write(self.path, good.model_dump_json(indent=2) + "\n")
            except OSError as exc:
                log.warning("cannot save %s to %s: %s", self.what, self.path, exc)
        self._doc = doc if doc is not None else self.model()
        self._last = max(self._number(self._doc), self._number(good) if good is not None else 0)
        return self._doc

    def _read_file(self) -> D | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        return self._parse(text, str(self.path))

    def _cached_copy(self) -> D | StateCorrupt | None:
        """Redis' copy; None when there is none or Redis cannot be reached; the error when it is damaged."""
        try:
            with redis_errors(self.redis, f"reading the copy of {self.what}"):
                text = self.redis.get(self.key)
        except StateError as exc:
            log.info("%s; going by %s alone", exc, self.path)
            return None
        try:
            return self._parse(text, f"Redis key {self.key}") if text is not None else None
        except StateCorrupt as exc:
            return exc

    def _parse(self, text: str, where: str) -> D:
        try:
            return self.model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise StateCorrupt(f"{self.what} in {where} is damaged: {describe_validation_error(exc)}", where) from None

    def _number(self, doc: D) -> int:
        return int(getattr(doc, self.number))
