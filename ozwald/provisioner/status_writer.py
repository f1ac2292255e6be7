# SPDX-License-Identifier: AGPL-3.0-or-later
"""Copies the newest published statuses into the Redis status cache from a thread of its own.

The cache serves a process that has not reconciled yet (after a restart) and other readers; the API of this
process answers from memory. Writing 100 statuses (serializing each, one transaction) on the reconciler's
thread right after a publish competed with the request threads that the publish had just woken: blocking
queries answered 18-29 ms after the change (issue 12). Here the write waits a moment (`settle`), so the woken
answers go out first, and a burst of publishes while 100 units change is written once, not once each.

Every `keep_every` seconds the thread also runs the `keep` callbacks: they bring Redis' copies of the state
files up to date (`DurableDocument.sync_cache`), so a Redis that restarted empty, or was down during a
change, has them again within seconds without any reader or writer waiting on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ozwald.records import ActiveService
from ozwald.state import StateError, StatusCache

log = logging.getLogger(__name__)
SETTLE_S = 0.02
KEEP_EVERY_S = 5.0


class StatusWriter:
    def __init__(self, cache: StatusCache, settle: float = SETTLE_S, *, keep: Sequence[Callable[[], object]] = (),
                 keep_every: float = KEEP_EVERY_S) -> None:
        self.cache = cache
        self.settle = settle
        self.keep = keep
        self.keep_every = keep_every
        self.writes = 0  # for tests and benchmarks: how many times the cache was replaced
        self._lock = threading.Lock()
        self._pending: Sequence[ActiveService] | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ozwald-status-writer", daemon=True)
        self._thread.start()

    def offer(self, services: Sequence[ActiveService]) -> None:
        """The newest statuses; an older offer not written yet is dropped. Without a running writer thread
        (a reconciler run in the caller's thread), written at once."""
        if self._thread is None or not self._thread.is_alive():
            self._write(services)
            return
        with self._lock:
            self._pending = services
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything offered so far is written (or failed to be); False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return True
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending, then end the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        keep_at = time.monotonic()
        while True:
            woken = self._wake.wait(max(0.0, keep_at - time.monotonic()) if self.keep else None)
            if self.keep and time.monotonic() >= keep_at:
                self._keep()
                keep_at = time.monotonic() + self.keep_every
            if not woken:
                continue
            if not self._stopping.is_set():
                self._stopping.wait(self.settle)  # let the answers the publish woke go out first
            with self._lock:
                self._wake.clear()
                services, self._pending = self._pending, None
                self._busy = services is not None
            if services is not None:
                self._write(services)
            with self._idle:
                self._busy = False
                self._idle.notify_all()
            if self._stopping.is_set():
                with self._lock:
                    if self._pending is None:
                        return

    def _keep(self) -> None:
        for keep in self.keep:
            try:
                keep()
            except StateError as exc:  # a damaged state file: every reader of it says so too
                log.warning("could not copy to Redis: %s", exc)
            except Exception:
                log.exception("could not copy to Redis")

    def _write(self, services: Sequence[ActiveService]) -> None:
        try:
            self.cache.replace_all({s.name: s for s in services})
            self.writes += 1
        except StateError as exc:
            log.warning("could not cache statuses: %s", exc)
        except Exception:  # the writer must outlive anything one write hits; the next publish tries again
            log.exception("could not cache statuses")
