# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the reconciler last learned from systemd about each Ozwald unit, shared by its threads.

Three threads feed it: the reconcile pass (a full read of every `ozwald-*` unit), the status refresher
(a read of only the units that signalled a change) and the job watcher (`JobRemoved` for a start or
restart Ozwald queued). A read takes milliseconds over D-Bus, and a newer fact may arrive meanwhile:
every write is tagged with a per-unit version, and a read only lands if nothing newer landed while it
was in flight. So a slow read never pulls a unit back to an older state (`available` → `starting` →
`available` flicker).

A start job that ends `done` means systemd made the unit active (with Notify=healthy: healthy). That fact
is published at once as an `active` state (with no invocation id: which container runs is not known yet);
the unit is also marked for a real read, which replaces it with systemd's full record milliseconds later.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ozwald.systemd.protocol import UnitState

RECENT_JOBS = 256  # JobRemoved for jobs not registered yet: a job can end before enqueue() returns its path


@dataclasses.dataclass(frozen=True)
class ObservedView:
    """A consistent copy: the states, and the units whose queued job has not ended yet."""

    states: Mapping[str, UnitState]
    pending: frozenset[str]


class ObservedUnits:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._states: dict[str, UnitState] = {}
        self._versions: dict[str, int] = {}
        self._jobs: dict[str, str] = {}  # job path → unit, for starts and restarts Ozwald queued
        self._ended: OrderedDict[str, str] = OrderedDict()  # job path → result, for jobs nobody claimed yet
        self._dirty: set[str] = set()

    # Reads -------------------------------------------------------------------------------------------

    def view(self) -> ObservedView:
        with self._cond:
            return ObservedView(dict(self._states), frozenset(self._jobs.values()))

    def versions(self) -> dict[str, int]:
        """Take before a read; hand back to `put`/`replace_all` so the read lands only if still newest."""
        with self._cond:
            return dict(self._versions)

    # Writes ------------------------------------------------------------------------------------------

    def _bump(self, unit: str) -> None:
        self._versions[unit] = self._versions.get(unit, 0) + 1

    def put(self, state: UnitState, before: Mapping[str, int]) -> bool:
        """Store a unit read; a unit that is no longer loaded is forgotten. False if a newer fact won."""
        with self._cond:
            if self._versions.get(state.name, 0) != before.get(state.name, 0):
                self._dirty.add(state.name)  # what won may itself be a synthesized state: read again
                self._cond.notify_all()
                return False
            self._bump(state.name)
            if state.load_state == "loaded":
                self._states[state.name] = state
            else:
                self._states.pop(state.name, None)
            return True

    def replace_all(self, states: Mapping[str, UnitState], before: Mapping[str, int]) -> None:
        """Store a full listing: units missing from it are no longer loaded."""
        with self._cond:
            for unit in set(self._states) | set(states):
                if self._versions.get(unit, 0) != before.get(unit, 0):
                    self._dirty.add(unit)
                    continue
                self._bump(unit)
                if unit in states:
                    self._states[unit] = states[unit]
                else:
                    self._states.pop(unit, None)
            if self._dirty:
                self._cond.notify_all()

    def mark_dirty(self, units: Iterable[str]) -> None:
        with self._cond:
            self._dirty.update(units)
            if self._dirty:
                self._cond.notify_all()

    def take_dirty(self, timeout: float) -> set[str]:
        """Units to read now. A unit with a queued job stays dirty until its job ends: while systemd works
        on it its status is `starting` whatever it signals, and the end of the job brings the real news."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._dirty - set(self._jobs.values())), timeout)
            ready = self._dirty - set(self._jobs.values())
            self._dirty -= ready
            return ready

    # Jobs --------------------------------------------------------------------------------------------

    def job_queued(self, job_path: str, unit: str) -> str | None:
        """Register a queued job; if it already ended, settle it now and return its result."""
        with self._cond:
            result = self._ended.pop(job_path, None)
            if result is None:
                self._jobs[job_path] = unit
                return None
            self._settle(unit, result)
            return result

    def job_removed(self, job_path: str, result: str) -> str | None:
        """Settle a job that ended: the unit it was for, or None if it was not one of Ozwald's."""
        with self._cond:
            unit = self._jobs.pop(job_path, None)
            if unit is None:
                self._ended[job_path] = result
                while len(self._ended) > RECENT_JOBS:
                    self._ended.popitem(last=False)
                return None
            self._settle(unit, result)
            return unit

    def _settle(self, unit: str, result: str) -> None:
        if result == "done":
            known = self._states.get(unit) or UnitState(name=unit, load_state="loaded", active_state="",
                                                         sub_state="")
            now = time.clock_gettime_ns(time.CLOCK_REALTIME) // 1000
            self._states[unit] = dataclasses.replace(known, load_state="loaded", active_state="active",
                                                     sub_state="running", state_change_usec=now,
                                                     active_enter_usec=now, job_type="", invocation_id="")
            self._bump(unit)
        self._dirty.add(unit)
        self._cond.notify_all()

    def forget_jobs(self, units: Iterable[str]) -> None:
        """Drop queued jobs of units being stopped: systemd cancels them, and their end says nothing."""
        gone = set(units)
        with self._cond:
            for path in [p for p, u in self._jobs.items() if u in gone]:
                del self._jobs[path]
            self._dirty |= gone
            self._cond.notify_all()
