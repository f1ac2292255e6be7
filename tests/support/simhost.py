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

An on-demand instance's socket and proxy are units too (`connect` is a client's connection): the socket
listens and, on a connection while no proxy runs, starts the proxy, which needs the container's unit; the
connection waits in the backlog until the proxy runs, and is reset if the container's start fails. A proxy
that starts while its container is active clears the container's start counter (its ExecStartPost). The
proxy exits after its `--exit-idle-time` without a connection, and the container (`StopWhenUnneeded=yes`)
stops with it; a connection meanwhile starts both again once the stop ended. The proxy wants the container
(Wants=, After=, PartOf=): it runs even when the container's start failed, closing the connections it takes,
and stopping the container's unit takes the proxy with it.

Every change to what runs calls `on_change`, so a test can check what was last published at that instant
(tests/support/simrun.py does).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ozwald.quadlet.naming import (
    container_name,
    instance_of_unit,
    is_container_unit,
    proxy_name,
    socket_name,
    unit_labels,
    unit_name,
)
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
    idle_s: float = 0.0  # a proxy's --exit-idle-time
    reset_on_ready: bool = False  # a proxy's ExecStartPost: resets its container's start counter if it is active
    gated: bool = False  # a swap gate (drop-in ExecStartPre) holds its start until Ozwald opens it

    @classmethod
    def parse(cls, text: str) -> Config:
        behaviour = re.search(r"SIM=([a-z0-9:.]+)", text)
        gate = re.search(r"^ExecStartPost=/usr/bin/sleep (\S+)$", text, re.MULTILINE)
        idle = re.search(r"--exit-idle-time=(\S+)s ", text)
        return cls(text, unit_labels(text).get("spec-hash"), behaviour.group(1) if behaviour else "healthy:1",
                   _setting(text, "Restart", "no"), _seconds(_setting(text, "RestartSec", "0.1")),
                   _seconds(_setting(text, "TimeoutStartSec", "90")), int(_setting(text, "StartLimitBurst", "5")),
                   _seconds(_setting(text, "StartLimitIntervalSec", "10")), float(gate.group(1)) if gate else 0.0,
                   float(idle.group(1)) if idle else 0.0,
                   re.search(r"^ExecStartPost=.*systemctl reset-failed", text, re.MULTILINE) is not None,
                   re.search(r"^ExecStartPre=.*/run/ozwald/swap/", text, re.MULTILINE) is not None)


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
    epoch: int = 0  # a new serial on every transition: timers of an older epoch are void
    last_connection: float = 0.0  # a proxy's: when its last connection came
    activated_at: float = 0.0  # when its current start began


@dataclass
class Connection:
    """A client's connection to an on-demand instance's socket."""

    instance: str
    opened: float
    outcome: str = "pending"  # served, refused (nothing listens), reset (the start it waited for failed),
    # cut (its container stopped while it was still being answered)
    served_at: float | None = None
    duration: float = 0.0  # how long the answer takes once the container has it

    def in_flight(self, now: float) -> bool:
        return self.outcome == "served" and self.served_at is not None and now < self.served_at + self.duration


class SimHost:
    def __init__(self) -> None:
        self.now = 0.0
        self.files: dict[str, StoredUnit] = {}
        self.companions: dict[str, dict[str, str]] = {}  # instance → {unit: text}: its socket and proxy
        self.connections: list[Connection] = []
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

    def _job_path(self) -> str:
        return f"/org/freedesktop/systemd1/job/{self._serial_next()}"

    def _at(self, unit: Unit, delay: float, what: str) -> None:
        heapq.heappush(self._timers, (self.now + delay, self._serial_next(), unit.name, unit.epoch, what))

    # Unit life ----------------------------------------------------------------------------------------------
    def _set(self, unit: Unit, active: str, sub: str, result: str | None = None) -> None:
        unit.active_state, unit.sub_state, unit.change_usec = active, sub, self.usec()
        unit.result = result or unit.result
        unit.epoch = self._serial_next()  # never reused: a unit removed and loaded again starts over
        if active in ("inactive", "failed"):
            unit.running = None
        if active in ("deactivating", "inactive", "failed") and is_container_unit(unit.name):
            for connection in self.connections:  # the server goes: answers under way are cut
                if connection.instance == instance_of_unit(unit.name) and connection.in_flight(self.now):
                    connection.outcome = "cut"
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
            self._container_down(unit, failed=True)  # a proxy waiting for it starts and closes its connections
            return
        unit.starts = [*window, self.now]
        if manual:
            unit.n_restarts = 0
        unit.running, unit.invocation = unit.config, f"inv{self._serial_next()}"
        unit.exit_usec, unit.result, unit.activated_at = 0, "success", self.now
        if unit.config.gated:
            self._set(unit, "activating", "start-pre")  # the gate waits for open_gate()
            self._at(unit, unit.config.start_timeout_s, "timeout")
            return
        self._run(unit)

    def _run(self, unit: Unit) -> None:
        """The main process starts: what it does comes from SIM."""
        unit.start_usec = self.usec()
        self._set(unit, "activating", "start")
        kind, *args = unit.config.behaviour.split(":")
        if kind == "fail":
            self._at(unit, FAIL_S, "exit:3")
        elif kind == "hang":
            self._at(unit, unit.config.start_timeout_s, "timeout")
        else:
            self._at(unit, float(args[0]) + unit.config.ready_gate_s if args else 1.0, "ready")
        # TimeoutStartSec counts from the start job, the time at the gate included
        self._at(unit, unit.config.start_timeout_s - (self.now - unit.activated_at), "timeout")

    def close(self, connection: Connection) -> None:
        """The client closes a connection it held open: its answer, if under way, ends now."""
        if connection.in_flight(self.now) and connection.served_at is not None:
            connection.duration = self.now - connection.served_at
            proxy = self.units.get(proxy_name(connection.instance))
            if proxy is not None and proxy.active_state == "active":
                proxy.last_connection = self.now
                self._at(proxy, proxy.config.idle_s, "idle")

    def count_connections(self, port: int) -> int:
        """Requests in flight through the proxy that forwards to `port` (Reconciler's `count_connections`)."""
        for name, unit in self.units.items():
            if name.endswith(":proxy.service") and f" 127.0.0.1:{port}" in unit.config.text:
                instance = instance_of_unit(name)
                return sum(1 for c in self.connections if c.instance == instance and c.in_flight(self.now))
        return 0

    def open_gate(self, instance: str) -> bool:
        """Ozwald writes to the swap gate: the start at the gate goes on; False when no start waits there."""
        unit = self.units.get(unit_name(instance))
        if unit is None or (unit.active_state, unit.sub_state) != ("activating", "start-pre"):
            return False
        self._run(unit)
        return True

    def _fire(self, unit: Unit, what: str) -> None:
        if what == "idle":
            self._idle(unit)
            return
        if what == "ready" and unit.active_state == "activating" and unit.sub_state == "start":
            self._set(unit, "active", "running")
            self._container_ready(unit)
            kind, *args = unit.config.behaviour.split(":")
            if kind == "crash":  # T seconds after the start
                self._at(unit, max(0.0, float(args[1]) - (self.usec() - unit.start_usec) / 1e6), "exit:1")
            if unit.job is not None and unit.job[1] in ("start", "restart"):
                self._end_job(unit, "done")
        elif what.startswith("exit") or (what == "timeout" and unit.sub_state in ("start", "start-pre")):
            self.crash(unit.name, int(what.split(":")[1]) if what.startswith("exit") else 1,
                       "timeout" if what == "timeout" else "exit-code")
        elif what == "stopped":
            self._set(unit, "inactive", "dead")
            self._after_stop(unit)
            self._container_down(unit, failed=False)
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
        self._container_down(unit, failed=True)

    def _after_stop(self, unit: Unit) -> None:
        if unit.job is not None and unit.job[1] in ("start", "restart"):
            self._start(unit, manual=True)
            return
        self._end_job(unit, "done")
        if unit.load_state != "loaded":
            del self.units[unit.name]

    # On demand ----------------------------------------------------------------------------------------------
    def connect(self, instance: str, duration: float = 0.0) -> Connection:
        """A client connects to the instance's socket; its answer takes `duration` once the container has it."""
        connection = Connection(instance, self.now, duration=duration)
        self.connections.append(connection)
        sock, proxy = self.units.get(socket_name(instance)), self.units.get(proxy_name(instance))
        if sock is None or sock.active_state != "active" or proxy is None:
            connection.outcome = "refused"
        elif proxy.active_state == "active":
            self._serve(proxy, connection, self._ready(instance))
        else:
            self._trigger(sock, proxy)
        return connection

    def _port_taken(self, sock: Unit) -> bool:
        listen = _setting(sock.config.text, "ListenStream", "")
        return any(u is not sock and u.name.endswith(".socket") and u.active_state == "active"
                   and _setting(u.config.text, "ListenStream", "") == listen for u in self.units.values())

    def knock(self, host: str, port: int, timeout: float) -> None:
        """A connection to whichever socket listens on `port` (Reconciler's `knock`), closed at once."""
        for name, unit in self.units.items():
            if name.endswith(".socket") and unit.active_state == "active" \
                    and re.search(rf"^ListenStream=(\S*:)?{port}$", unit.config.text, re.MULTILINE):
                self.connect(instance_of_unit(name) or "")
                return
        raise ConnectionRefusedError(111, "Connection refused")

    def _trigger(self, sock: Unit, proxy: Unit) -> None:
        if sock.sub_state != "running":
            self._set(sock, "active", "running")
        if proxy.active_state != "activating":
            self._start_proxy(proxy, None)

    def _ready(self, instance: str) -> bool:
        container = self.units.get(unit_name(instance))
        return container is not None and container.active_state == "active"

    def _serve(self, proxy: Unit, connection: Connection, backend_up: bool = True) -> None:
        """The proxy takes the connection: served by a ready container, else closed (reset)."""
        connection.outcome = "served" if backend_up else "reset"
        connection.served_at = self.now if backend_up else None
        proxy.last_connection = max(proxy.last_connection, self.now + (connection.duration if backend_up else 0.0))
        self._at(proxy, proxy.last_connection - self.now + proxy.config.idle_s, "idle")

    def _pending(self, instance: str) -> list[Connection]:
        return [c for c in self.connections if c.instance == instance and c.outcome == "pending"]

    def _start_proxy(self, proxy: Unit, job: str | None) -> None:
        """Requires= and After= the container's unit: it waits for the container to be ready."""
        name = instance_of_unit(proxy.name) or ""
        container = self.units.get(unit_name(name))
        if job is not None:
            proxy.job = (job, "start")
        if container is None or container.load_state != "loaded":
            self._proxy_down(proxy, "dependency")
            return
        self._set(proxy, "activating", "start")
        if container.active_state == "active" and (container.job is None or container.job[1] == "start"):
            self._proxy_up(proxy)
        elif container.job is None or container.job[1] == "stop":
            if container.job is not None:
                self._end_job(container, "canceled")
            container.job = (self._job_path(), "start")
            if container.active_state in ("inactive", "failed") or container.sub_state == "auto-restart":
                self._start(container, manual=True)

    def _proxy_up(self, proxy: Unit) -> None:
        self._set(proxy, "active", "running")
        self._end_job(proxy, "done")
        proxy.last_connection = self.now
        name = instance_of_unit(proxy.name) or ""
        if proxy.config.reset_on_ready and self._ready(name):  # `systemctl is-active … && systemctl reset-failed …`
            self.reset_failed_units([unit_name(name)])
        for connection in self._pending(name):
            self._serve(proxy, connection, self._ready(name))
        self._at(proxy, proxy.config.idle_s, "idle")

    def _proxy_down(self, proxy: Unit, result: str) -> None:
        """The proxy ends (idle, stopped, or its start failed with the container's): the socket listens again,
        and a connection still in its backlog starts the proxy again, unless the start it waited for failed."""
        self._end_job(proxy, result)
        if proxy.active_state != "inactive":
            self._set(proxy, "inactive", "dead")
        name = instance_of_unit(proxy.name) or ""
        sock = self.units.get(socket_name(name))
        if sock is not None and sock.active_state == "active":
            self._set(sock, "active", "listening")
        if result == "dependency":
            for connection in self._pending(name):
                connection.outcome = "reset"
        elif self._pending(name) and sock is not None and sock.active_state == "active":
            self._trigger(sock, proxy)

    def _idle(self, proxy: Unit) -> None:
        if proxy.active_state != "active" or self.now - proxy.last_connection < proxy.config.idle_s - 1e-9:
            return
        self._proxy_down(proxy, "done")
        self._unneeded(instance_of_unit(proxy.name) or "")

    def _unneeded(self, name: str) -> None:
        """StopWhenUnneeded=yes: nothing that needs the container runs, so systemd stops it."""
        container = self.units.get(unit_name(name))
        proxy = self.units.get(proxy_name(name))
        if container is None or proxy is None or proxy.active_state != "inactive" or container.job is not None:
            return
        if container.active_state in ("active", "activating") and container.sub_state != "auto-restart":
            container.job = (self._job_path(), "stop")
            self._set(container, "deactivating", "stop-sigterm")
            self._at(container, STOP_S, "stopped")

    def _container_ready(self, container: Unit) -> None:
        name = instance_of_unit(container.name) or ""
        proxy = self.units.get(proxy_name(name))
        if proxy is None or not is_container_unit(container.name):
            return
        if proxy.active_state == "activating":
            self._proxy_up(proxy)
        elif proxy.active_state == "inactive":
            self._unneeded(name)  # restarted by Restart= with nobody needing it

    def _container_down(self, container: Unit, failed: bool) -> None:
        name = instance_of_unit(container.name) or ""
        proxy = self.units.get(proxy_name(name))
        if proxy is None or not is_container_unit(container.name) or proxy.active_state == "inactive" \
                or container.active_state not in ("inactive", "failed"):
            return
        if failed and proxy.active_state == "activating":
            self._proxy_up(proxy)  # Wants=, After=: it starts once the container's start ended, failed or not
        elif not failed:
            self._proxy_down(proxy, "done")  # PartOf=: stopped with the container

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
            unit.job = (path := self._job_path(), operation)
            out[name] = path
            if not is_container_unit(name):
                self._enqueue_companion(unit, operation)
                continue
            if operation == "stop" and (proxy := self.units.get(proxy_name(instance_of_unit(name) or ""))) \
                    is not None and proxy.active_state != "inactive":
                self._proxy_down(proxy, "done")  # Requires=: the proxy stops with the container
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
            elif unit.active_state == "deactivating":
                pass  # the start waits for the stop to end (_after_stop)
            elif unit.active_state != "activating" or unit.sub_state == "auto-restart":
                self._start(unit, manual=True)
        return out

    def _enqueue_companion(self, unit: Unit, operation: str) -> None:
        assert unit.job is not None
        if unit.name.endswith(".socket"):
            if operation in ("stop", "restart") and unit.active_state != "inactive":
                self._set(unit, "inactive", "dead")
                for connection in self._pending(instance_of_unit(unit.name) or ""):
                    connection.outcome = "reset"
            if operation in ("start", "restart") and self._port_taken(unit):
                self._set(unit, "failed", "failed", "resources")  # bind(): address already in use
                self._end_job(unit, "failed")
                return
            if operation in ("start", "restart") and unit.active_state != "active":
                self._set(unit, "active", "listening")
            self._end_job(unit, "done")
        elif operation == "stop":
            self._proxy_down(unit, "done")
        elif unit.active_state == "active":
            self._end_job(unit, "done")
        else:
            self._start_proxy(unit, unit.job[0])

    def reload(self) -> None:
        texts = {unit_name(instance): stored.text for instance, stored in self.files.items()}
        for instance in self.files:
            for filename, text in self.companions.get(instance, {}).items():
                if ".service.d/" in filename:  # a drop-in: part of the unit it extends
                    extended = filename.split(".d/", 1)[0]
                    texts[extended] = texts.get(extended, "") + "\n" + text
                else:
                    texts[filename] = text
        for name, text in texts.items():
            config = Config.parse(text)
            if name in self.units:
                self.units[name].config, self.units[name].load_state = config, "loaded"
            else:
                self.units[name] = Unit(name, config)
        for name, unit in list(self.units.items()):
            if name not in texts:
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
        gate = unit.swap_gate.text if unit.swap_gate else None
        self.companions[unit.instance] = {c.filename: c.text for c in unit.companions}
        if old is not None and old.text == unit.text and old.persistent == persistent:
            if old.swap_gate == gate:
                return False
            self.files[unit.instance] = replace(old, swap_gate=gate)  # the Quadlet file is left alone
            return True
        self.files[unit.instance] = StoredUnit(unit.instance, Path("/sim") / unit.filename, persistent, unit.text,
                                               self.usec(), gate)
        return True

    def remove(self, instance: str) -> bool:
        self.companions.pop(instance, None)
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

    def listening(self, instance: str) -> bool:
        unit = self.units.get(socket_name(instance))
        return unit is not None and unit.active_state == "active"

    def running(self, instance: str) -> bool:
        unit = self.units.get(unit_name(instance))
        return unit is not None and unit.running is not None and unit.sub_state != "auto-restart"
