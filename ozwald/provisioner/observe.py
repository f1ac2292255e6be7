# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the metrics count from the statuses as they are published: restarts, failures, start times, transitions.

The reconciler publishes the whole list of statuses whenever one changes (`Provisioner._publish`); this
observer compares each list with the one before and keeps, per instance, the numbers a scrape reports:

- restarts: systemd's automatic restarts (`info.restarts`, the unit's NRestarts). systemd sets it back to 0
  when Ozwald starts the unit again, so the counter adds what grew since the last list and, after a reset,
  the new value: it only ever rises, as a Prometheus counter must;
- failures: how often the instance became `failed`;
- the time of its last status change (wall clock, for `..._timestamp_seconds`);
- time from a desired change to `available`: the clock starts when a new generation is posted (this process's
  own updates say when; an update through another process is first seen in a published list) for an instance
  that is not `available` under it, and stops when it is. A crash restart is not a desired change and is not
  timed; an instance that fails first is not timed either (the failure is counted).

An instance that leaves the statuses is forgotten, so the labels stay bounded by the desired set; a counter
that starts again from zero is a reset, which `rate()` and `increase()` handle.

The applied generation is the newest generation whose statuses have all settled (none `starting` or
`stopping`). Pure bookkeeping, no I/O: `observe` runs on the reconciler's thread at every publish, the
scrape reads a copy from a request thread.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ozwald.records import ActiveService

# Seconds from a desired change to available: a small container is up in a second, a large model loads for
# many minutes (the default start timeout is 15 min).
START_BUCKETS: tuple[float, ...] = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
# Ready for traffic: available, or idle (an on-demand instance's socket listens; its container starts on the
# first connection). A start on demand is not a desired change: its time is not a start time of the histogram.
READY = frozenset({"available", "idle"})
SETTLED = READY | {"failed"}


@dataclass
class Histogram:
    """Cumulative-ready bucket counts (one per upper bound, then +Inf), the count and the sum."""

    bounds: tuple[float, ...] = START_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) pairs, +Inf last, as Prometheus' `le` buckets count."""
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


@dataclass
class InstanceCounts:
    """One instance's numbers, as last seen."""

    service: str
    status: str
    restarts_seen: int  # the last info.restarts
    restarts_total: int
    failures_total: int
    transition_at: float  # wall clock of the last status change
    generation: int | None
    timing_since: float | None = None  # monotonic: when the desired change it waits to be available for began


@dataclass(frozen=True)
class Observed:
    """A copy of the observer's numbers for one scrape."""

    instances: dict[str, InstanceCounts]
    start_seconds: dict[str, Histogram]  # per service
    applied_generation: int | None
    publishes: int


def _generation(service: ActiveService) -> int | None:
    value = service.info.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _restarts(service: ActiveService) -> int:
    value = service.info.get("restarts")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class StatusObserver:
    """Fed every published list (`observe`) and every desired generation posted here (`desired_changed`)."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 bounds: tuple[float, ...] = START_BUCKETS) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._bounds = bounds
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceCounts] = {}
        self._histograms: dict[str, Histogram] = {}
        self._posted: dict[int, float] = {}  # generation → monotonic time it was posted (this process's updates)
        self._newest_seen: int | None = None
        self._applied: int | None = None
        self._publishes = 0

    def desired_changed(self, generation: int) -> None:
        """A desired set was stored (called at once by the store's listener): the clocks start here."""
        with self._lock:
            self._posted.setdefault(generation, self._monotonic())
            while len(self._posted) > 16:  # only recent ones matter; a burst of posts must not grow this
                del self._posted[min(self._posted)]

    def observe(self, services: Sequence[ActiveService], read_generation: int | None = None) -> None:
        """A newly published list. `read_generation`: the generation the reconciler last read, which says what
        an empty list was published for."""
        wall, now = self._wall(), self._monotonic()
        with self._lock:
            self._publishes += 1
            first = self._publishes == 1
            seen: set[str] = set()
            for service in services:
                seen.add(service.name)
                self._one(service, first, wall, now)
            for gone in set(self._instances) - seen:
                del self._instances[gone]
            generations = [g for g in map(_generation, services) if g is not None]
            newest = max(generations, default=read_generation)
            if newest is not None:
                self._newest_seen = max(newest, self._newest_seen or newest)
            if newest is not None and all(s.status in SETTLED for s in services):
                self._applied = max(newest, self._applied or newest)

    def _one(self, service: ActiveService, first: bool, wall: float, now: float) -> None:
        generation, restarts, status = _generation(service), _restarts(service), str(service.status)
        known = self._instances.get(service.name)
        if known is None:
            known = InstanceCounts(service.service, status, restarts, restarts, 1 if status == "failed" else 0,
                                   wall, generation)
            self._instances[service.name] = known
            if not first and status not in READY:  # a new instance of a posted set: time its start
                known.timing_since = self._began(generation, now)
            return
        known.service = service.service
        if restarts > known.restarts_seen:
            known.restarts_total += restarts - known.restarts_seen
        elif restarts < known.restarts_seen:  # systemd's count began again (Ozwald started the unit)
            known.restarts_total += restarts
        known.restarts_seen = restarts
        if generation is not None and (known.generation is None or generation > known.generation):
            known.generation = generation
            # A new desired set: an instance it does not leave available now has a change to make.
            known.timing_since = None if status in READY else self._began(generation, now)
        if status == "starting" and known.timing_since is None and service.info.get("pending") \
                and not service.info.get("restarting") and known.generation is not None:
            known.timing_since = self._began(known.generation, now)  # the change shows after its generation
        if status != known.status:
            known.transition_at = wall
            if status == "failed":
                known.failures_total += 1
                known.timing_since = None
            elif status == "available" and known.timing_since is not None:
                histogram = self._histograms.setdefault(known.service, Histogram(self._bounds))
                histogram.observe(max(0.0, now - known.timing_since))
                known.timing_since = None
            elif status == "idle":  # ready without running: a later wake is not the end of this change
                known.timing_since = None
            known.status = status

    def _began(self, generation: int | None, now: float) -> float:
        posted = self._posted.get(generation) if generation is not None else None
        return posted if posted is not None and posted <= now else now

    def snapshot(self) -> Observed:
        with self._lock:
            return Observed({name: InstanceCounts(**vars(c)) for name, c in self._instances.items()},
                            {name: h.copy() for name, h in self._histograms.items()}, self._applied,
                            self._publishes)
