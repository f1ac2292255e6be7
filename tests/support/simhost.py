# SPDX-License-Identifier: AGPL-3.0-or-later
"""A simulated host for the reconciler: systemd's manager, Quadlet files and containers, on a clock the test
controls.

It answers the driver's ports (`SystemdPort`, `UnitFilesPort`) the way systemd 257 and Podman 5.4 were seen
to in the test host (tests/integration): a unit runs the configuration loaded at its last reload, not the
file on disk; jobs replace each other; `Restart=on-failure` restarts after `RestartSec` (state
`activating/auto-restart`, `NRestarts` counting) until `StartLimitBurst` starts in `StartLimitIntervalSec`,
then the unit is `failed` with result `start-limit-hit`; a start job ends when the unit is ready; stopping
takes a moment. What the container does comes from its environment's `SIM` variable:

- `healthy:D`: ready D seconds after it starts;
- `fail`: exits 3 at once, never ready;
- `crash:D:T`: ready after D seconds, exits 1 T seconds after it started;
- `hang`: never ready; the start times out (TimeoutStartSec).

Every change to what runs calls `on_change`, so a test can check what was last published at that instant
(tests/support/simrun.py does).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ozwald.quadlet.naming import container_name, instance_of_unit, unit_labels, unit_name
from ozwald.quadlet.render import RenderedUnit
from ozwald.quadlet.stored import StoredUnit
from ozwald.systemd.errors import SystemdError, UnitNotFound
from ozwald.systemd.protocol import JobRemoved, SystemdEvent, UnitChanged, UnitState

EPOCH_USEC = 1_760_000_000_000_000
STOP_S = 0.2
FAIL_S = 0.3


def _setting(text: str, key: str, default: str) -> str:
    found = re.search(rf"^{key}=(\S+)$", text, re.MULTILINE)
    return found.group(1) if found else default


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


@dataclass(frozen=True)
class Config:
    """A unit as loaded by the last reload."""

    text: str
    spec_hash: str | None
    behaviour: str
    restart: str
    restart_s: float
    start_timeout_s: float
    burst: int
    interval_s: float
    ready_gate_s: float  # the min_uptime ExecStartPost gate of a unit without a health check

    @classmethod
    def parse(cls, text: str) -> Config:
        behaviour = re.search(r"SIM=([a-z0-9:.]+)", text)
        gate = re.search(r"^ExecStartPost=/usr/bin/sleep (\S+)$", text, re.MULTILINE)
        return cls(text, unit_labels(text).get("spec-hash"), behaviour.group(1) if behaviour else "healthy:1",
                   _setting(text, "Restart", "no"), _seconds(_setting(text, "RestartSec", "0.1")),
                   _seconds(_setting(text, "TimeoutStartSec", "90")), int(_setting(text, "StartLimitBurst", "5")),
                   _seconds(_setting(text, "StartLimitIntervalSec", "10")), float(gate.group(1)) if gate else 0.0)


@dataclass
class Unit:
    name: str
    config: Config
    load_state: str = "loaded"
    active_state: str = "inactive"
    sub_state: str = "dead"
    result: str = "success"
    n_restarts: int = 0
    start_usec: int = 0
    exit_usec: int = 0
    exit_status: int = 0
    change_usec: int = 0
    invocation: str = ""
    running: Config | None = None  # what the current invocation was started from
    job: tuple[str, str] | None = None  # (path, operation)
    starts: list[float] = field(default_factory=list)
    epoch: int = 0  # bumped on every transition: timers of an older epoch are void


class SimHost:
    def __init__(self) -> None:
        self.now = 0.0
        self.files: dict[str, StoredUnit] = {}
        self.units: dict[str, Unit] = {}
        self.events: list[SystemdEvent] = []
        self.on_change: Callable[[], None] = lambda: None
        self.alive = True
        self._timers: list[tuple[float, int, str, int, str]] = []
        self._serial = 0
        self._tick = 0

    # The clock ---------------------------------------------------------------------------------------------
    def usec(self) -> int:
        """Strictly growing: a start and a file write at the same instant are still ordered, as in reality."""
        self._tick += 1
        return EPOCH_USEC + int(self.now * 1e6) + self._tick

    def next_timer(self) -> float | None:
        while self._timers and self._void(self._timers[0]):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def _void(self, timer: tuple[float, int, str, int, str]) -> bool:
        unit = self.units.get(timer[2])
        return unit is None or unit.epoch != timer[3]

    def advance(self, until: float) -> None:
        """Run every timer due up to `until`, in order, then set the clock there."""
        while (due := self.next_timer()) is not None and due <= until:
            at, _, name, _, what = heapq.heappop(self._timers)
            self.now = max(self.now, at)
            self._fire(self.units[name], what)
        self.now = max(self.now, until)

    def take_events(self) -> list[SystemdEvent]:
        events, self.events = self.events, []
        return events

    def _serial_next(self) -> int:
        self._serial += 1
        return self._serial

    def _at(self, unit: Unit, delay: float, what: str) -> None:
        heapq.heappush(self._timers, (self.now + delay, self._serial_next(), unit.name, unit.epoch, what))

    # Unit life ----------------------------------------------------------------------------------------------
    def _set(self, unit: Unit, active: str, sub: str, result: str | None = None) -> None:
        unit.active_state, unit.sub_state, unit.change_usec = active, sub, self.usec()
        unit.result = result or unit.result
        unit.epoch += 1
        if active in ("inactive", "failed"):
            unit.running = None
        self.events.append(UnitChanged(unit.name))
        self.on_change()

    def _end_job(self, unit: Unit, result: str) -> None:
        if unit.job is not None:
            path, _ = unit.job
            unit.job = None
            self.events.append(JobRemoved(0, path, unit.name, result))

    def _start(self, unit: Unit, manual: bool) -> None:
        window = [t for t in unit.starts if self.now - t < unit.config.interval_s]
        if len(window) >= unit.config.burst:
            self._set(unit, "failed", "failed", "start-limit-hit")
            self._end_job(unit, "failed")
            return
        unit.starts = [*window, self.now]
        if manual:
            unit.n_restarts = 0
        unit.running, unit.invocation = unit.config, f"inv{self._serial_next()}"
        unit.start_usec, unit.exit_usec, unit.result = self.usec(), 0, "success"
        self._set(unit, "activating", "start")
        kind, *args = unit.config.behaviour.split(":")
        if kind == "fail":
            self._at(unit, FAIL_S, "exit:3")
        elif kind == "hang":
            self._at(unit, unit.config.start_timeout_s, "timeout")
        else:
            self._at(unit, float(args[0]) + unit.config.ready_gate_s if args else 1.0, "ready")
        self._at(unit, unit.config.start_timeout_s, "timeout")

    def _fire(self, unit: Unit, what: str) -> None:
        if what == "ready" and unit.active_state == "activating" and unit.sub_state == "start":
            self._set(unit, "active", "running")
            kind, *args = unit.config.behaviour.split(":")
            if kind == "crash":  # T seconds after the start
                self._at(unit, max(0.0, float(args[1]) - (self.usec() - unit.start_usec) / 1e6), "exit:1")
            if unit.job is not None and unit.job[1] in ("start", "restart"):
                self._end_job(unit, "done")
        elif what.startswith("exit") or (what == "timeout" and unit.sub_state == "start"):
            self.crash(unit.name, int(what.split(":")[1]) if what.startswith("exit") else 1,
                       "timeout" if what == "timeout" else "exit-code")
        elif what == "stopped":
            self._set(unit, "inactive", "dead")
            self._after_stop(unit)
        elif what == "auto-restart":
            unit.n_restarts += 1
            self._start(unit, manual=False)

    def crash(self, name: str, status: int = 1, result: str = "exit-code") -> None:
        """The container exits (or its start times out); systemd's Restart= policy decides what follows."""
        unit = self.units.get(name)
        if unit is None or unit.active_state not in ("activating", "active") or unit.sub_state == "auto-restart":
            return
        unit.exit_usec, unit.exit_status = self.usec(), status
        if unit.job is not None and unit.job[1] in ("start", "restart"):
            self._end_job(unit, "failed")
        if unit.config.restart in ("on-failure", "always") and unit.job is None:
            self._set(unit, "activating", "auto-restart", result)
            unit.running = None
            self._at(unit, unit.config.restart_s, "auto-restart")
        else:
            self._set(unit, "failed", "failed", result)

    def _after_stop(self, unit: Unit) -> None:
        if unit.job is not None and unit.job[1] == "restart":
            self._start(unit, manual=True)
            return
        self._end_job(unit, "done")
        if unit.load_state != "loaded":
            del self.units[unit.name]

    # SystemdPort ---------------------------------------------------------------------------------------------
    def list_units(self, pattern: str = "ozwald-*") -> list[UnitState]:
        return [self._state(u) for u in self.units.values()]

    def unit_states(self, units: Sequence[str]) -> list[UnitState]:
        return [self._state(self.units[u]) if u in self.units else UnitState(u, "not-found", "inactive", "dead")
                for u in units]

    def _state(self, unit: Unit) -> UnitState:
        return UnitState(unit.name, unit.load_state, unit.active_state, unit.sub_state, result=unit.result,
                         n_restarts=unit.n_restarts, exec_main_status=unit.exit_status,
                         state_change_usec=unit.change_usec, job_type="pending" if unit.job else "",
                         invocation_id=unit.invocation, exec_main_start_usec=unit.start_usec,
                         exec_main_exit_usec=unit.exit_usec)

    def enqueue(self, operation: str, units: Sequence[str]) -> dict[str, str | SystemdError]:
        out: dict[str, str | SystemdError] = {}
        for name in units:
            unit = self.units.get(name)
            if unit is None or (unit.load_state != "loaded" and operation != "stop"):
                out[name] = UnitNotFound(name, "org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not found.")
                continue
            if unit.job is not None:
                self._end_job(unit, "canceled")
            unit.job = (path := f"/org/freedesktop/systemd1/job/{self._serial_next()}", operation)
            out[name] = path
            running = unit.active_state in ("active", "activating", "deactivating") \
                and unit.sub_state != "auto-restart"
            if operation == "stop" or (operation == "restart" and running):
                if unit.sub_state == "auto-restart":
                    self._set(unit, "inactive", "dead")
                if running:
                    self._set(unit, "deactivating", "stop-sigterm")
                    self._at(unit, STOP_S, "stopped")
                else:
                    self._after_stop(unit)
            elif unit.active_state == "active":
                self._end_job(unit, "done")
            elif unit.active_state != "activating" or unit.sub_state == "auto-restart":
                self._start(unit, manual=True)
        return out

    def reload(self) -> None:
        for instance, stored in self.files.items():
            name = unit_name(instance)
            config = Config.parse(stored.text)
            if name in self.units:
                self.units[name].config, self.units[name].load_state = config, "loaded"
            else:
                self.units[name] = Unit(name, config)
        for name, unit in list(self.units.items()):
            if instance_of_unit(name) not in self.files:
                if unit.active_state in ("inactive", "failed") and unit.job is None:
                    del self.units[name]
                else:
                    unit.load_state = "not-found"

    def reset_failed_units(self, units: Sequence[str]) -> dict[str, SystemdError]:
        for name in units:
            unit = self.units.get(name)
            if unit is None:
                continue
            unit.starts = []
            if unit.active_state == "failed":
                self._set(unit, "inactive", "dead", "success")
        return {}

    def wait_for(self, unit: str, predicate: Callable[[UnitState], bool], timeout: float) -> UnitState:
        raise NotImplementedError("the simulated host is driven through Reconciler.turn()")

    @contextmanager
    def watch(self, deliver: Callable[[SystemdEvent], None]) -> Iterator[None]:
        yield

    # UnitFilesPort --------------------------------------------------------------------------------------------
    def existing(self) -> dict[str, StoredUnit]:
        return dict(self.files)

    def write(self, unit: RenderedUnit, persistent: bool) -> bool:
        old = self.files.get(unit.instance)
        if old is not None and old.text == unit.text and old.persistent == persistent:
            return False
        self.files[unit.instance] = StoredUnit(unit.instance, Path("/sim") / unit.filename, persistent, unit.text,
                                               self.usec())
        return True

    def remove(self, instance: str) -> bool:
        return self.files.pop(instance, None) is not None

    # Podman and the journal ----------------------------------------------------------------------------------
    def running_ids(self, names: list[str]) -> dict[str, str]:
        return {container_name(u.name.removeprefix("ozwald-").removesuffix(".service")): f"c-{u.invocation}"
                for u in self.units.values() if u.running is not None and u.sub_state != "auto-restart"
                and container_name(u.name.removeprefix("ozwald-").removesuffix(".service")) in names}

    def explain(self, state: UnitState) -> str:
        if state.result == "start-limit-hit":
            return "crash loop: systemd gave up (start limit hit)"
        if state.result == "timeout":
            return "never became healthy within the start timeout"
        return f"exited {state.exec_main_status}"

    # What really runs, for the checks -------------------------------------------------------------------------
    def ready(self, instance: str) -> Config | None:
        """The configuration a ready container of the instance runs, or None when none is ready."""
        unit = self.units.get(unit_name(instance))
        if unit is None or unit.active_state != "active" or unit.running is None:
            return None
        return unit.running

    def running(self, instance: str) -> bool:
        unit = self.units.get(unit_name(instance))
        return unit is not None and unit.running is not None and unit.sub_state != "auto-restart"
