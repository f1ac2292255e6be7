# SPDX-License-Identifier: AGPL-3.0-or-later
"""The reconciler's driver: one thread that feeds the core (`reconcile_core`) and executes its commands.

Other threads only put typed events on its queue (`ozwald.provisioner.events`): systemd's JobRemoved and
unit changes (from the D-Bus receiver), a new desired generation, new settings (a reload). The thread takes
them in batches, hands them to the core, and runs what the core decides against systemd, the unit files,
Podman and the journal, feeding each result back as an event. Every decision is the core's; what lives
here is I/O and the thread. The simulated host of the tests drives the same class through `turn()`.

Jobs are queued the way `systemctl` queues them, one call after another, each reply awaited: with 100
stop calls sent at once systemd began 100 jobs in the same instant, and every health-checked container's
`podman rm` hung until TimeoutStopSec (bench/README.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Protocol

from ozwald import files, sockets
from ozwald.config import ResolveError, Settings
from ozwald.diagnose import explain_failure
from ozwald.podman import PodmanInspector, PodmanUnavailable
from ozwald.provisioner import reconcile_core as rc
from ozwald.provisioner import reconcile_messages as rm
from ozwald.provisioner.events import DesiredChanged, Event, SettingsChanged, Shutdown, Tick
from ozwald.provisioner.plan import Target, hold_failed, plan, stale, started_from
from ozwald.provisioner.reconcile_core import ReconcilerCore
from ozwald.provisioner.reconcile_messages import PassReport
from ozwald.provisioner.requests import effective_spec
from ozwald.quadlet import RenderedUnit, RenderError, render_unit
from ozwald.quadlet.keys import NEWEST_KNOWN, Version
from ozwald.quadlet.naming import UNIT_PATTERN, container_name, instance_of_unit, swap_gate
from ozwald.quadlet.on_demand import render_swap_gate
from ozwald.quadlet.stored import StoredUnit
from ozwald.records import ActiveService, DesiredInstance, DesiredSet, PlanEntry
from ozwald.systemd import SystemdError
from ozwald.systemd.journal import container_log_tail
from ozwald.systemd.protocol import JobRemoved, SystemdEvent, UnitChanged, UnitState

__all__ = ["PassReport", "Reconciler", "hold_failed", "render_outcome", "render_outcomes", "started_from"]

log = logging.getLogger(__name__)
ENQUEUE_CHUNK = 10  # jobs queued between two heartbeats of the worker
KNOCK_TIMEOUT_S = 2.0


class SystemdPort(Protocol):
    """What the reconciler asks of systemd's manager (ozwald.systemd.SystemdClient, or a simulated host)."""

    @property
    def alive(self) -> bool: ...
    def list_units(self, pattern: str = ...) -> list[UnitState]: ...
    def unit_states(self, units: Sequence[str]) -> list[UnitState]: ...
    def enqueue(self, operation: str, units: Sequence[str]) -> Mapping[str, str | SystemdError]: ...
    def reload(self) -> None: ...
    def reset_failed_units(self, units: Sequence[str]) -> Mapping[str, SystemdError]: ...
    def wait_for(self, unit: str, predicate: Callable[[UnitState], bool], timeout: float) -> UnitState: ...
    def watch(self, deliver: Callable[[SystemdEvent], None]) -> AbstractContextManager[None]: ...


class UnitFilesPort(Protocol):
    """Ozwald's Quadlet files (ozwald.units.UnitStore, or a simulated host)."""

    def existing(self) -> dict[str, StoredUnit]: ...
    def write(self, unit: RenderedUnit, persistent: bool) -> bool: ...
    def remove(self, instance: str) -> bool: ...


Explain = Callable[[rm.Rendered, UnitState], str]


def render_outcome(settings: Settings, instance: DesiredInstance, podman_version: Version) -> rm.Outcome:
    """One desired instance under the current settings: rendered, a resource, or why it cannot run. Settings
    reloaded under a desired set can orphan an instance; that fails the instance, never the pass."""
    try:
        spec = effective_spec(settings, instance)
        if spec.type != "container":
            return rm.Resource(instance, spec.type)
        unit = render_unit(spec, instance.name, podman_version)
    except ResolveError as exc:
        return rm.Unresolved(instance, f"{exc.field}: {exc.message}")
    except RenderError as exc:
        return rm.Unresolved(instance, str(exc))
    return rm.Rendered(instance, unit, spec.persistent, spec.image or "", spec.health is not None)


def render_outcomes(settings: Settings, instances: Sequence[DesiredInstance], podman_version: Version
                    ) -> list[rm.Outcome]:
    """Every desired instance rendered; an on-demand one that swaps with others (admission's choice, kept to
    partners that still run on demand under the current settings) gets the gate that serialises their starts."""
    outcomes = [render_outcome(settings, i, podman_version) for i in instances]
    on_demand = {o.instance.name for o in outcomes if isinstance(o, rm.Rendered) and o.on_demand}
    out: list[rm.Outcome] = []
    for outcome in outcomes:
        if isinstance(outcome, rm.Rendered) and outcome.on_demand:
            partners = tuple(p for p in outcome.instance.exclusive_with if p in on_demand)
            if partners:
                gate = render_swap_gate(outcome.instance.name, partners)
                outcome = replace(outcome, unit=replace(outcome.unit, swap_gate=gate), exclusive_with=partners)
        out.append(outcome)
    return out


class Reconciler:
    def __init__(self, settings: Settings, read_desired: Callable[[], DesiredSet], systemd: SystemdPort,
                 units: UnitFilesPort, publish: Callable[[list[ActiveService]], None], *,
                 podman: PodmanInspector | None = None, podman_version: Version = NEWEST_KNOWN,
                 journal_prefix: Sequence[str] = (), resync_interval: float = 60.0,
                 run_besides: Callable[[DesiredSet], Sequence[DesiredInstance]] | None = None,
                 explain: Explain | None = None, clock: Callable[[], float] = time.monotonic,
                 knock: Callable[[str, int, float], None] = sockets.knock,
                 open_gate: Callable[[str], bool] | None = None,
                 count_connections: Callable[[int], int] = sockets.connections_to) -> None:
        self.settings = settings
        self.read_desired = read_desired
        self.systemd = systemd
        self.units = units
        self.publish = publish
        self.podman = podman
        self.podman_version = podman_version
        self.journal_prefix = tuple(journal_prefix)
        # Instances run besides the orchestrator's (the profiling queue's), given its desired set; whoever
        # changes what it returns calls wake().
        self.run_besides = run_besides
        self.explain = explain or self._explain
        self.clock = clock
        self.knock = knock  # a client's connection to an on-demand socket (the simulated host's, in tests)
        # A line to the FIFO a swapping instance's start waits on (the simulated host's gate, in tests)
        self.open_gate = open_gate or (lambda name: files.write_fifo(swap_gate(name), "go"))
        self.count_connections = count_connections  # requests in flight to a backend port (the simulated host's)
        self.core = ReconcilerCore(resync_interval)
        self._unresolved: dict[str, str] = {}  # instance → why it cannot run, as last logged
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Set when the connection to systemd is gone for good: statuses can no longer be true, so the
        # process should exit and be restarted (it adopts what runs); see ozwald.process.
        self.bus_lost = threading.Event()
        # For the service manager: set once the first pass has read systemd (READY=1), and the monotonic
        # time of the worker's last turn (WATCHDOG=1 only while it keeps turning).
        self.first_pass_done = threading.Event()
        self.heartbeat = time.monotonic()

    @property
    def passes(self) -> int:
        return self.core.passes

    @property
    def unit_reads(self) -> int:
        """Single-unit reads outside passes: an idle provisioner does none."""
        return self.core.unit_reads

    @property
    def last_report(self) -> PassReport | None:
        return self.core.last_report

    # Life cycle and the other threads' doors ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ozwald-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._events.put(Shutdown())
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.bus_lost.is_set()

    def wake(self, generation: int | None = None) -> None:
        """Ask for a pass (for `generation`, if given: one already handled is dropped by the worker)."""
        self._events.put(DesiredChanged(generation))

    def nudge(self, name: str, operation: str) -> None:
        """Wake an on-demand instance (`wake`: its container starts and then idles out like after a connection)
        or put it to sleep (`sleep`: its container stops, the socket keeps listening). The worker ignores an
        instance that is not desired or not on demand; callers check first (ozwald.provisioner.core)."""
        self._events.put(rm.Nudge(name, operation))

    def replace_settings(self, settings: Settings) -> None:
        """New, validated settings (a reload of the settings file): the worker reconciles with them at once."""
        self._events.put(SettingsChanged(settings))

    # The worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self.systemd.watch(self._events.put):
                self._events.put(DesiredChanged())
                self._serve()
        except Exception:
            log.exception("the reconciler stopped")
            raise

    def _serve(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            try:
                batch: list[Event] = [self._events.get(timeout=self.core.wait_seconds(self.clock()))]
            except queue.Empty:
                batch = [Tick()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._events.get_nowait())
            if any(isinstance(event, Shutdown) for event in batch):
                return
            if not self.systemd.alive:
                log.error("the connection to systemd's bus is lost: statuses can no longer be read")
                self.bus_lost.set()
                return
            self.turn(batch)

    def turn(self, batch: Sequence[Event]) -> None:
        """Fold a batch of events into the core and run what it decides, until it has nothing more to do."""
        for event in batch:
            if isinstance(event, SettingsChanged):
                self.settings = event.settings
                self._feed(DesiredChanged())  # reconcile what is stored under the new settings
            elif isinstance(event, DesiredChanged | rm.Nudge):
                self._feed(event)
            elif isinstance(event, UnitChanged | JobRemoved):
                if isinstance(event, JobRemoved) and event.result not in ("done", "canceled"):
                    log.info("job %s of %s ended %s", event.job_path, event.unit, event.result)
                self._feed(event)
        self._steps(recover=True)

    def _steps(self, recover: bool) -> None:
        """Run what the core decides until it has nothing more to do. `recover`: the worker survives anything
        a step hits (a pass is retried); without it (run_once) the error reaches the caller."""
        for _ in range(100):  # each step clears what asked for it; the bound only guards against a bug
            commands = self.core.decide(self.clock())
            if not commands:
                return
            try:
                self._run_commands(commands)
            except Exception:
                if not recover:
                    raise
                if not self.systemd.alive:  # the loop reports the lost bus at once; nothing to retry
                    return
                log.exception("reconcile step failed; retrying in %g s", rc.RETRY_FAILED_PASS_S)
                # The turn goes on: units that signalled are still read and published, so a crash is told
                # while the desired set cannot be read.
                self.core.pass_failed(self.clock())

    def _feed(self, event: rm.Event) -> None:
        self._run_commands(self.core.handle(event, self.clock()))

    def _run_commands(self, commands: Sequence[rm.Command]) -> None:
        for command in commands:
            self._execute(command)

    def _execute(self, command: rm.Command) -> None:
        if isinstance(command, rm.ReadHost):
            started = time.monotonic()
            self._feed(self._snapshot())
            if self.core.last_report is not None:
                self.core.last_report.seconds = time.monotonic() - started
            self.first_pass_done.set()
            self._log_pass()
        elif isinstance(command, rm.ReadUnits):
            self._feed(rm.UnitsRead(self.systemd.unit_states(command.units)))  # pipelined: 2 round trips
        elif isinstance(command, rm.ReadFiles):
            self._feed(rm.FilesRead(self.units.existing()))
        elif isinstance(command, rm.Write):
            self.units.write(command.unit, command.persistent)
        elif isinstance(command, rm.Remove):
            self.units.remove(command.name)
        elif isinstance(command, rm.Reload):
            self.systemd.reload()
        elif isinstance(command, rm.ResetFailed):
            if command.units:  # per unit, refusals (not loaded: nothing to reset) are returned, not raised
                with contextlib.suppress(SystemdError):
                    self.systemd.reset_failed_units(command.units)  # pipelined
        elif isinstance(command, rm.Enqueue):
            self._enqueue(command.operation, command.units)
        elif isinstance(command, rm.Knock):
            self._knock(command)
        elif isinstance(command, rm.OpenGate):
            if not self.open_gate(command.name):
                self._feed(rm.GateClosed(command.name))
        elif isinstance(command, rm.CountConnections):
            self._feed(rm.ConnectionsCounted({n: self.count_connections(p) for n, p in command.ports.items()}))
        else:
            self._publish()

    def _snapshot(self) -> rm.Snapshot:
        desired = self.read_desired()
        if self.run_besides is not None:
            extra = tuple(i for i in self.run_besides(desired) if i.name not in desired.by_name())
            desired = desired.model_copy(update={"instances": desired.instances + extra})
        outcomes = render_outcomes(self.settings, desired.instances, self.podman_version)
        unresolved = {o.instance.name: o.reason for o in outcomes if isinstance(o, rm.Unresolved)}
        for name, reason in unresolved.items():
            if self._unresolved.get(name) != reason:  # once per cause, not once per pass
                log.warning("instance %s cannot run under the current settings (stopped): %s", name, reason)
        self._unresolved = unresolved
        return rm.Snapshot(self.settings, desired, outcomes, self.units.existing(), self.states())

    def _log_pass(self) -> None:
        report = self.core.last_report
        if report is not None and any(e.action != "keep" for e in report.entries):
            log.info("generation %d: %s", report.generation,
                     "; ".join(e.reason.replace(":", f" {e.name}:", 1) for e in report.entries if e.action != "keep"))

    def _enqueue(self, operation: str, units: Sequence[str]) -> None:
        for first in range(0, len(units), ENQUEUE_CHUNK):
            chunk = units[first:first + ENQUEUE_CHUNK]
            queued = self.systemd.enqueue(operation, chunk)
            # One call per unit, each reply awaited: 100 starts took 15 s while systemd was busy. That is
            # progress, not a wedged worker, so the watchdog keeps being fed.
            self.heartbeat = time.monotonic()
            refused = {u: r.message for u, r in queued.items() if isinstance(r, SystemdError)}
            for unit, message in refused.items():
                log.warning("%s %s refused by systemd: %s", operation, unit, message)
            self._feed(rm.Queued(operation, {u: r for u, r in queued.items() if isinstance(r, str)}, refused))

    def _knock(self, command: rm.Knock) -> None:
        try:
            self.knock(command.host, command.port, KNOCK_TIMEOUT_S)
        except OSError as exc:  # the socket is down: the status says so, and the pass starts it again
            log.warning("cannot wake %s: connecting to %s:%d failed: %s", command.name, command.host, command.port,
                        exc)

    def _publish(self) -> list[ActiveService]:
        for rendered, state in self.core.unexplained():
            reason = self.explain(rendered, state)
            self._feed(rm.Explained(rendered.instance.name, state.state_change_usec, reason))
        services = self.core.publication()
        if services is None:
            return self.core.published or []
        self._emit(services)
        # Container ids come from Podman, which is slower than systemd: the status goes out first.
        wanted = [s.name for s in services if s.status == "available" and s.info.get("invocation")
                  and s.info.get("container_id") is None]
        found = self._container_ids_of(wanted, services) if wanted else {}
        self.core.container_ids.update(found)
        if found:
            services = self.core.publication() or services
            self._emit(services)
        return services

    def _emit(self, services: list[ActiveService]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("publish: %s", "; ".join(f"{s.name} {s.status} {s.info.get('active_state')}/"
                                               f"{s.info.get('sub_state')} {s.info.get('reason', '')}"
                                               for s in services))
        self.publish(services)

    def _container_ids_of(self, names: list[str], services: list[ActiveService]) -> dict[str, tuple[str, str]]:
        """The running containers of these instances (a restart is a new invocation and a new container),
        in one Podman call however many instances became available at once."""
        if self.podman is None:
            return {}
        try:
            ids = self.podman.running_ids([container_name(name) for name in names])
        except PodmanUnavailable:
            return {}
        invocations = {s.name: str(s.info.get("invocation")) for s in services}
        return {name: (invocations[name], ids[container_name(name)]) for name in names
                if container_name(name) in ids}

    def _explain(self, rendered: rm.Rendered, state: UnitState) -> str:
        logs = container_log_tail(container_name(rendered.instance.name), 20, command_prefix=self.journal_prefix)
        return explain_failure(state, image=rendered.image, has_health_check=rendered.has_health, logs=logs,
                               podman=self.podman)

    # For callers outside the worker --------------------------------------------------------------------

    def states(self) -> dict[str, UnitState]:
        return {state.name: state for state in self.systemd.list_units(UNIT_PATTERN)
                if instance_of_unit(state.name) is not None}

    def preview(self, desired: DesiredSet) -> list[PlanEntry]:
        """What a pass would do for `desired`, without doing it (the plan endpoint; any thread)."""
        outcomes = render_outcomes(self.settings, desired.instances, self.podman_version)
        targets = [Target(o.instance, o.unit.spec_hash, o.unit.text) for o in outcomes if isinstance(o, rm.Rendered)]
        files, states = self.units.existing(), self.states()
        return plan(self.settings, targets, files, states, stale(files, states))

    def run_once(self) -> PassReport:
        """One pass and a publish, in the caller's thread: for a reconciler whose worker is not started."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("run_once is for a reconciler whose worker is not running")
        self._feed(DesiredChanged())
        self._steps(recover=False)
        # No worker hears the stop jobs end: wait for them here, so the pass is complete when this returns.
        for _ in range(3):
            stops = [(path, unit) for path, (unit, op) in self.core.jobs.items() if op == "stop"]
            if not stops:
                break
            for path, unit in stops:
                self.systemd.wait_for(unit, lambda s: s.active_state in ("inactive", "failed")
                                      or s.load_state != "loaded", 300)
                self._feed(JobRemoved(0, path, unit, "done"))
            self._steps(recover=False)
        report = self.core.last_report
        assert report is not None
        return report

    def refresh_statuses(self) -> list[ActiveService]:
        """Read every Ozwald unit and publish, in the caller's thread (worker not started)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("refresh_statuses is for a reconciler whose worker is not running")
        self.core.states = self.states()
        self.core.jobs.clear()
        self.core.decided.clear()
        self.core.news = True
        return self._publish()

