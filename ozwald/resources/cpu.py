# SPDX-License-Identifier: AGPL-3.0-or-later
"""CPU load measured off the request path.

`psutil.cpu_percent(interval=1)` sleeps for the interval, which would put a one-second stall into
every `/srv/host/resources` call. Instead a daemon thread samples with `interval=None` (the load
since its own previous call) on a fixed period and publishes the latest value; readers only load a
reference. psutil 7 keeps the `interval=None` baseline per thread, so other callers of
cpu_percent in the same process do not shorten this thread's measurement window (older releases
share one baseline process-wide).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

import psutil

log = logging.getLogger(__name__)


def _psutil_cpu_percent() -> float:
    return float(psutil.cpu_percent(interval=None))


class CpuLoadSampler:
    """Publishes host CPU utilisation (0-100, all cores together) every `interval` seconds."""

    def __init__(
        self,
        interval: float = 1.0,
        *,
        sample: Callable[[], float] = _psutil_cpu_percent,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"sampling interval must be > 0 seconds, got {interval}")
        self._interval = interval
        self._sample = sample
        self._clock = clock
        # One immutable tuple, swapped atomically, so a reader never sees a value without its time.
        self._latest: tuple[float, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def load_percent(self) -> float | None:
        """The most recent sample, or None before the first full interval has elapsed."""
        latest = self._latest
        return None if latest is None else latest[0]

    @property
    def age_seconds(self) -> float | None:
        """How old the published sample is; lets callers notice a sampler that stopped producing."""
        latest = self._latest
        return None if latest is None else max(0.0, self._clock() - latest[1])

    def start(self) -> None:
        """Start the thread; calling it on a running sampler does nothing."""
        with self._lifecycle:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ozwald-cpu-sampler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it; the wait is short because the sleep is an Event wait."""
        with self._lifecycle:
            thread = self._thread
            self._stop.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
            self._thread = None

    def _take(self) -> float | None:
        try:
            value = float(self._sample())
        except Exception:  # the thread must outlive a bad sample, but the bug must be visible
            log.exception("CPU load sample failed; keeping the previous value")
            return None
        return min(100.0, max(0.0, value))

    def _run(self) -> None:
        # The first interval=None call only sets this thread's baseline; its result is meaningless.
        self._take()
        while not self._stop.wait(self._interval):
            value = self._take()
            if value is not None:
                self._latest = (value, self._clock())

    def __enter__(self) -> CpuLoadSampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
