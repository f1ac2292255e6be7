# SPDX-License-Identifier: AGPL-3.0-or-later
"""The one worker that makes systemd match the desired set, and says truthfully where each instance is.

One thread owns every piece of reconcile state. Other threads only put typed events on its queue
(`ozwald.provisioner.events`): systemd's JobRemoved and unit changes (from the D-Bus receiver), a new
desired generation (from the store's listeners), new settings (a reload). The thread handles them in
batches: a new generation, new settings or the periodic resync run a pass; unit changes and ended jobs
re-read just those units; then the statuses are composed (`status.describe`, a pure function) and
published if they changed.

A pass reads the desired set, renders every instance, compares with the unit files and unit states on
the host (`plan`), then applies without waiting on any job: queue stops (a stopped unit's file is
removed when its stop job ends), write changed files, reload systemd once, and queue starts and
restarts. Before each start or restart that Ozwald decides, it resets the unit's start-rate counter, so
only restarts systemd makes by itself after a crash count towards the crash-loop limit. A generation
counts as applied only when its pass completed; a failed pass is retried.

What runs is told apart from what is wanted: a unit's current invocation runs the spec of the unit file
it was started from (the file's write time against the invocation's start), so an old container is never
published under a new spec. On start-up the same pass adopts what already runs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ozwald.config import Settings
from ozwald.diagnose import explain_failure
from ozwald.podman import PodmanInspector, PodmanUnavailable
from ozwald.provisioner.events import DesiredChanged, Event, SettingsChanged, Shutdown, Tick
from ozwald.provisioner.plan import Target, plan
from ozwald.provisioner.requests import effective_spec
from ozwald.provisioner.status import (
    RUNNING_STATES,
    Observed,
    RunningSpec,
    describe,
    describe_leaving,
    describe_resource,
    status_of,
)
from ozwald.quadlet import RenderedUnit, render_unit
from ozwald.quadlet.keys import NEWEST_KNOWN, Version
from ozwald.quadlet.naming import UNIT_PATTERN, container_name, instance_of_unit, unit_name
from ozwald.records import ActiveService, DesiredInstance, DesiredSet, PlanEntry
from ozwald.systemd import SystemdClient, SystemdError
from ozwald.systemd.journal import container_log_tail
from ozwald.systemd.protocol import JobRemoved, UnitChanged, UnitState
from ozwald.units import UnitStore
from ozwald.units.store import StoredUnit

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0  # the worker turns at least this often, idle or not (the service manager's watchdog)
ENQUEUE_CHUNK = 10  # jobs queued between two heartbeats of the worker
BUSY_UNIT_READ_S = 0.5  # a unit with a job queued is re-read at most this often (crash-loop progress)
RETRY_FAILED_PASS_S = 2.0


@dataclass
class PassReport:
    generation: int
    entries: list[PlanEntry] = field(default_factory=list)
    reloaded: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Job:
    unit: str
    operation: str  # start, restart, stop


def _instance_of(unit: str) -> str:
    return instance_of_unit(unit) or unit


def _spec_of(unit: StoredUnit) -> RunningSpec:
    return RunningSpec(unit.spec_hash, unit.label("service"), unit.label("variety"), unit.label("profile"))


def _written_usec(unit: StoredUnit) -> int:
    try:
        return unit.path.stat().st_mtime_ns // 1000
    except OSError:
        return 0


def started_from(unit: StoredUnit, state: UnitState) -> bool:
    """The unit's current invocation was started after its file was last written, so runs that file's spec."""
    return state.exec_main_start_usec >= _written_usec(unit)


def hold_failed(entry: PlanEntry, state: UnitState | None, new_generation: bool) -> PlanEntry:
    """An unchanged instance that ran and ended stays ended until the desired set is posted again: systemd's
    Restart= policy already decided to give up on it. One written but never started still starts (a
    provisioner killed between writing and starting must converge)."""
    ran = state is not None and (state.active_state == "failed" or state.exec_main_start_usec > 0)
    if entry.cause == "ended" and ran and not new_generation:
        ended = entry.reason.removeprefix("start: unchanged but ")
        return entry.model_copy(update={"action": "keep", "cause": "held",
                                        "reason": f"keep: {ended}; post the desired set to retry"})
    return entry


class Reconciler:
    def __init__(self, settings: Settings, read_desired: Callable[[], DesiredSet], systemd: SystemdClient,
                 units: UnitStore, publish: Callable[[list[ActiveService]], None], *,
                 podman: PodmanInspector | None = None, podman_version: Version = NEWEST_KNOWN,
                 journal_prefix: Sequence[str] = (), resync_interval: float = 60.0,
                 run_besides: Callable[[DesiredSet], Sequence[DesiredInstance]] | None = None) -> None:
        self.settings = settings
        self.read_desired = read_desired
        self.systemd = systemd
        self.units = units
        self.publish = publish
        self.podman = podman
        self.podman_version = podman_version
        self.journal_prefix = tuple(journal_prefix)
        self.resync_interval = resync_interval
        # Instances run besides the orchestrator's (the profiling queue's), given its desired set; whoever
        # changes what it returns calls wake().
        self.run_besides = run_besides
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Everything below belongs to the worker thread (or to the caller of run_once before start()).
        self._desired = DesiredSet()
        self._targets: dict[str, str | None] = {}  # desired instance → spec hash (None: not a container)
        self._states: dict[str, UnitState] = {}
        self._files: dict[str, StoredUnit] = {}
        self._replaced: dict[str, RunningSpec] = {}  # spec a running unit still runs after its file was rewritten
        self._jobs: dict[str, _Job] = {}  # job path → queued job
        self._refused: dict[str, str] = {}  # instance → why systemd refused its job
        self._failures: dict[str, tuple[int, str]] = {}  # instance → (state change µs, reason)
        self._container_ids: dict[str, tuple[str, str]] = {}  # instance → (invocation, container id)
        self._reload_owed = False  # unit files were removed since the last reload
        self._dirty: set[str] = set()
        self._stopped: set[str] = set()  # units whose stop job ended: their files go
        self._gone: set[str] = set()  # unwanted units whose stop ended "done": their signals are not news
        self._waiting: set[str] = set()  # instances whose start waits for stops to end (ports, GPU memory)
        self._last_read: dict[str, float] = {}
        self._news = True  # something a status is composed from changed since the last publish
        self._published_at = 0.0
        self._applied_generation: int | None = None
        self._wanted_generation = 0
        self._published: list[ActiveService] | None = None
        self.last_report: PassReport | None = None
        self.passes = 0
        self.unit_reads = 0  # single-unit reads outside passes: an idle provisioner does none
        # Set when the connection to systemd is gone for good: statuses can no longer be true, so the
        # process should exit and be restarted (it adopts what runs); see ozwald.provisioner.process.
        self.bus_lost = threading.Event()
        # For the service manager: set once the first pass has read systemd (READY=1), and the monotonic
        # time of the worker's last turn (WATCHDOG=1 only while it keeps turning).
        self.first_pass_done = threading.Event()
        self.heartbeat = time.monotonic()

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
        next_resync = time.monotonic() + self.resync_interval
        retry_at: float | None = None
        while True:
            self.heartbeat = now = time.monotonic()
            due = min(next_resync, retry_at if retry_at is not None else next_resync)
            wait = min(HEARTBEAT_S, max(0.0, due - now))
            if self._dirty:
                wait = min(wait, BUSY_UNIT_READ_S)
            try:
                batch: list[Event] = [self._events.get(timeout=wait)]
            except queue.Empty:
                batch = [Tick()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._events.get_nowait())
            if any(isinstance(event, Shutdown) for event in batch):
                return
            need_pass = self._absorb(batch)
            now = time.monotonic()
            if now >= next_resync or (retry_at is not None and now >= retry_at):
                need_pass = True
            if not self.systemd.alive:
                log.error("the connection to systemd's bus is lost: statuses can no longer be read")
                self.bus_lost.set()
                return
            if self._waiting and not self._stopping():
                need_pass = True
            try:
                if not need_pass and self._dirty:
                    need_pass = self._read_dirty()
                self._reload_owed = self._remove_stopped() or self._reload_owed
                if need_pass:
                    self._pass(reload_owed=self._reload_owed)
                    self._reload_owed = False
                    next_resync, retry_at = time.monotonic() + self.resync_interval, None
                    self.first_pass_done.set()
                    self._publish()
                else:
                    # A stopped unit is gone from the statuses whether or not its file is unloaded yet:
                    # publish first, and reload once the last stop job ended. Stopping 100 instances
                    # otherwise cost a reload (~0.3 s, holding this thread) per batch of ended jobs, and
                    # each batch's removal waited for its reload. Nothing new (signals of units being
                    # stopped, of other units): no compose of 100 statuses, but one a second all the same.
                    if self._news or time.monotonic() - self._published_at >= HEARTBEAT_S:
                        self._publish()
                    if self._reload_owed and not self._stopping():
                        self.systemd.reload()
                        self._reload_owed = False
            except Exception:  # the worker must survive anything one pass hits; the pass is retried
                log.exception("reconcile pass failed; retrying in %g s", RETRY_FAILED_PASS_S)
                retry_at = time.monotonic() + RETRY_FAILED_PASS_S

    def _absorb(self, batch: list[Event]) -> bool:
        """Fold a batch of events into the state; True if a pass is needed."""
        need_pass = False
        # Units being stopped that nobody wants: their stop job's end is the news; the changes on the way
        # (deactivating, a health check's timer going) are not worth a read of ~300 properties each.
        leaving = {job.unit for job in self._jobs.values()
                   if job.operation == "stop" and _instance_of(job.unit) not in self._targets}
        for event in batch:
            if isinstance(event, DesiredChanged):
                if event.generation is None or event.generation > self._wanted_generation:
                    need_pass = True
                    if event.generation is not None:
                        self._wanted_generation = event.generation
            elif isinstance(event, SettingsChanged):
                self.settings = event.settings
                need_pass = True
            elif isinstance(event, UnitChanged):
                if instance_of_unit(event.unit) is not None and event.unit not in self._gone \
                        and event.unit not in leaving:
                    self._dirty.add(event.unit)
            elif isinstance(event, JobRemoved):
                job = self._jobs.pop(event.job_path, None)
                if job is not None:
                    self._news = True
                    if job.operation == "stop":
                        self._stopped.add(job.unit)
                        if event.result == "done" and _instance_of(job.unit) not in self._targets:
                            # Down (a stop job ends "done" only once its unit is inactive or failed) and
                            # unwanted: it leaves the statuses now. Reading it would only say so, and while
                            # systemd is busy stopping 100 containers one batch of reads took 7-19 s, with
                            # every leaving instance shown as still stopping until it ended.
                            self._states.pop(job.unit, None)
                            self._dirty.discard(job.unit)
                            self._gone.add(job.unit)
                            continue
                    self._dirty.add(job.unit)
                    self._last_read.pop(job.unit, None)  # the end of a job is news: read at once
                    if job.operation != "stop" and event.result not in ("done", "canceled"):
                        log.info("%s of %s ended %s", job.operation, job.unit, event.result)
        return need_pass

    def _busy(self) -> set[str]:
        return {job.unit for job in self._jobs.values()}

    def _stopping(self) -> bool:
        return any(job.operation == "stop" for job in self._jobs.values())

    def _read_dirty(self) -> bool:
        """Re-read the units that signalled; True if an Ozwald unit nobody wants came up (a pass stops it)."""
        busy, now = self._busy(), time.monotonic()
        ready = {u for u in self._dirty if u not in busy or now - self._last_read.get(u, 0.0) >= BUSY_UNIT_READ_S}
        self._dirty -= ready
        unwanted_up = False
        wanted = {unit_name(name) for name in self._targets}
        read = sorted(ready)
        self._news = self._news or bool(read)
        for unit, state in zip(read, self.systemd.unit_states(read), strict=True):  # pipelined: 2 round trips
            self.unit_reads += 1
            self._last_read[unit] = now
            if state.load_state == "loaded":
                self._states[unit] = state
            else:
                self._states.pop(unit, None)
            if unit not in wanted and unit not in busy and state.active_state in ("active", "activating"):
                log.info("unwanted unit running: %s; reconciling now", unit)
                unwanted_up = True
        return unwanted_up

    def _remove_stopped(self) -> bool:
        """Remove the files of units whose stop job ended and that nobody wants again; True if any went."""
        removed = False
        busy = self._busy()
        going = [unit for unit in sorted(self._stopped) if _instance_of(unit) not in self._targets and unit not in busy]
        self._stopped.clear()
        if not going:
            return False
        self._news = True
        # A stop can end failed (killed after its timeout): reset, so the unit unloads cleanly. One pipelined
        # batch: one call per unit held this thread 13 s in all while 100 health-checked units stopped.
        with contextlib.suppress(SystemdError):  # per unit, refusals (not loaded: nothing to reset) are returned
            self.systemd.reset_failed_units(going)
        for unit in going:
            name = _instance_of(unit)
            removed = self.units.remove(name) or removed
            self._files.pop(name, None)
            self._replaced.pop(name, None)
        return removed

    # One pass ----------------------------------------------------------------------------------------

    def render(self, instance: DesiredInstance) -> RenderedUnit | None:
        spec = effective_spec(self.settings, instance)
        if spec.type != "container":
            return None
        return render_unit(spec, instance.name, self.podman_version)

    def targets(self, desired: DesiredSet) -> tuple[list[Target], dict[str, tuple[RenderedUnit, bool]]]:
        targets: list[Target] = []
        rendered: dict[str, tuple[RenderedUnit, bool]] = {}
        for instance in desired.instances:
            unit = self.render(instance)
            if unit is None:
                continue
            targets.append(Target(instance, unit.spec_hash, unit.text))
            rendered[instance.name] = (unit, effective_spec(self.settings, instance).persistent)
        return targets, rendered

    def states(self) -> dict[str, UnitState]:
        return {state.name: state for state in self.systemd.list_units(UNIT_PATTERN)
                if instance_of_unit(state.name) is not None}

    @staticmethod
    def stale(files: dict[str, StoredUnit], states: dict[str, UnitState]) -> set[str]:
        """Instances whose running container was started before their unit file was written."""
        return {name for name, stored in files.items()
                if (state := states.get(unit_name(name))) is not None and state.active_state in RUNNING_STATES
                and state.exec_main_start_usec and not started_from(stored, state)}

    def preview(self, desired: DesiredSet) -> list[PlanEntry]:
        """What a pass would do for `desired`, without doing it (the plan endpoint; any thread)."""
        targets, _ = self.targets(desired)
        files, states = self.units.existing(), self.states()
        return plan(self.settings, targets, files, states, self.stale(files, states))

    def run_once(self) -> PassReport:
        """One pass and a publish, in the caller's thread: for a reconciler whose worker is not started."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("run_once is for a reconciler whose worker is not running")
        report = self._pass()
        # No worker hears the stop jobs end: wait for them here, so the pass is complete when this returns.
        for path, job in list(self._jobs.items()):
            if job.operation == "stop":
                self._states[job.unit] = self.systemd.wait_for(
                    job.unit, lambda s: s.active_state in ("inactive", "failed") or s.load_state != "loaded", 300)
                del self._jobs[path]
                self._stopped.add(job.unit)
        removed = self._remove_stopped()
        if self._waiting:
            report = self._pass(reload_owed=removed)
        elif removed:
            self.systemd.reload()
        self._publish()
        return report

    def refresh_statuses(self) -> list[ActiveService]:
        """Read every Ozwald unit and publish, in the caller's thread (worker not started)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("refresh_statuses is for a reconciler whose worker is not running")
        self._states = self.states()
        self._jobs.clear()
        return self._publish()

    def _pass(self, reload_owed: bool = False) -> PassReport:
        started = time.monotonic()
        self._waiting.clear()
        desired = self.read_desired()
        self._wanted_generation = max(self._wanted_generation, desired.generation)
        if self.run_besides is not None:
            extra = tuple(i for i in self.run_besides(desired) if i.name not in desired.by_name())
            desired = desired.model_copy(update={"instances": desired.instances + extra})
        targets, rendered = self.targets(desired)
        files = self.units.existing()
        states = self.states()
        self._dirty -= set(states)
        self._gone.clear()  # what this pass read is the truth again, gone or not
        read_at = time.monotonic()
        self._last_read.update((unit, read_at) for unit in states)
        stale = self.stale(files, states)
        new_generation = self._applied_generation is not None and desired.generation != self._applied_generation
        entries = [hold_failed(e, states.get(unit_name(e.name)), new_generation)
                   for e in plan(self.settings, targets, files, states, stale)]
        report = PassReport(generation=desired.generation, entries=entries)
        self._states, self._files = states, files
        self._desired = desired
        self._targets = {i.name: None for i in desired.instances} | {t.instance.name: t.spec_hash for t in targets}
        for name in [n for n in self._refused if n not in self._targets]:
            del self._refused[name]
        for table in (self._failures, self._container_ids):
            for name in [n for n in table if n not in self._targets]:
                del table[name]

        by_action: dict[str, list[str]] = {"start": [], "stop": [], "restart": [], "keep": []}
        for entry in entries:
            by_action[entry.action].append(entry.name)
        if by_action["stop"] or by_action["restart"]:
            # The new targets make what is about to stop `stopping` and what is about to change `starting`:
            # say so before the first job is queued. Queuing 100 jobs one call after another takes seconds
            # on a busy systemd, and the units go down meanwhile; `available` from before must not outlive
            # that (the truth check of bench_scale counted 331 such answers). What is about to start shows
            # its job already: a unit left failed by an earlier run is not `failed` any more, it restarts.
            self._publish(about_to_queue={unit_name(name): action for action in ("start", "restart")
                                          for name in by_action[action]})
        busy = self._busy()
        to_stop = [unit_name(n) for n in by_action["stop"] if unit_name(n) not in busy
                   and (s := states.get(unit_name(n))) is not None and s.active_state not in ("inactive", "failed")]
        self._enqueue("stop", to_stop, report)
        changed = reload_owed
        busy = self._busy()
        down = [name for name in by_action["stop"] if unit_name(name) not in busy
                and ((state := states.get(unit_name(name))) is None or state.active_state in ("inactive", "failed"))]
        failed = [unit_name(name) for name in down
                  if (state := states.get(unit_name(name))) is not None and state.failed]
        if failed:
            with contextlib.suppress(SystemdError):  # per unit, refusals (not loaded: nothing to reset) are returned
                self.systemd.reset_failed_units(failed)  # pipelined, as after stops
        for name in down:
            changed = self.units.remove(name) or changed
            self._files.pop(name, None)
        deliberate = by_action["start"] + by_action["restart"]
        if deliberate and self._stopping():
            # What a stop frees (host ports, GPU memory, the container name) is free only once it ended:
            # the starts wait, and the generation is applied by the pass that follows the stops.
            self._waiting = set(deliberate)
            if changed:
                self.systemd.reload()
                report.reloaded = True
            report.seconds = time.monotonic() - started
            self.last_report = report
            self.passes += 1
            log.info("generation %d: stopping %s first; then %s", desired.generation,
                     ", ".join(by_action["stop"]), ", ".join(deliberate))
            return report

        for name in by_action["start"] + by_action["restart"]:
            unit, persistent = rendered[name]
            old, state = files.get(name), states.get(unit_name(name))
            if old is not None and old.text != unit.text and state is not None \
                    and state.active_state in RUNNING_STATES and started_from(old, state):
                self._replaced[name] = _spec_of(old)  # it keeps running the old spec until restarted
            if self.units.write(unit, persistent):
                changed = True
        if changed:
            self._files = self.units.existing()
            self.systemd.reload()
            report.reloaded = True
        # Ozwald's own starts must never count towards the crash-loop limit: only systemd's restarts do.
        with contextlib.suppress(SystemdError):  # per unit, refusals (not loaded: nothing to reset) are returned
            self.systemd.reset_failed_units([unit_name(name) for name in deliberate])  # pipelined
        for name in deliberate:
            self._refused.pop(name, None)
            self._failures.pop(name, None)
        self._enqueue("start", [unit_name(n) for n in by_action["start"]], report)
        self._enqueue("restart", [unit_name(n) for n in by_action["restart"]], report)

        self._applied_generation = desired.generation
        report.seconds = time.monotonic() - started
        self.last_report = report
        self.passes += 1
        if any(e.action != "keep" for e in entries):
            log.info("generation %d: %s", desired.generation,
                     "; ".join(e.reason.replace(":", f" {e.name}:", 1) for e in entries if e.action != "keep"))
        return report

    def _enqueue(self, operation: str, units: list[str], report: PassReport) -> None:
        if not units:
            return
        busy = {job.unit: path for path, job in self._jobs.items()}
        queued: dict[str, str | SystemdError] = {}
        for first in range(0, len(units), ENQUEUE_CHUNK):
            queued |= self.systemd.enqueue(operation, units[first:first + ENQUEUE_CHUNK])
            # One call per unit, each reply awaited: 100 starts took 15 s while systemd was busy. That is
            # progress, not a wedged worker, so the watchdog keeps being fed.
            self.heartbeat = time.monotonic()
        for unit in units:
            result = queued[unit]
            name = _instance_of(unit)
            if isinstance(result, SystemdError):
                report.errors[name] = result.message
                self._refused[name] = f"systemd refused to {operation} {unit}: {result.message}"
                log.warning("%s %s refused by systemd: %s", operation, unit, result.message)
                continue
            if unit in busy:  # a new job replaced the one queued before (job mode "replace")
                self._jobs.pop(busy[unit], None)
            self._jobs[result] = _Job(unit, operation)

    # Statuses ----------------------------------------------------------------------------------------

    def _running(self, name: str, state: UnitState | None) -> RunningSpec | None:
        if state is None or state.active_state not in RUNNING_STATES:
            self._replaced.pop(name, None)
            return None
        stored = self._files.get(name)
        if stored is not None and (started_from(stored, state) or not state.exec_main_start_usec):
            self._replaced.pop(name, None)
            return _spec_of(stored)
        return self._replaced.get(name)

    def _observe(self, instance: DesiredInstance, jobs_by_unit: dict[str, list[str]]) -> Observed:
        unit = unit_name(instance.name)
        state = self._states.get(unit)
        jobs = list(jobs_by_unit.get(unit, ()))
        if instance.name in self._waiting:
            jobs.append("start once the stops end")
        observed = Observed(state=state, running=self._running(instance.name, state),
                            job=jobs[-1] if jobs else None, refused=self._refused.get(instance.name))
        status = status_of(observed, self._targets.get(instance.name))
        if status == "failed" and state is not None:
            return Observed(state=state, running=observed.running, job=observed.job, refused=observed.refused,
                            failure=self._failure_reason(instance, state))
        if status == "available" and state is not None:
            known = self._container_ids.get(instance.name)
            if known is not None and known[0] == state.invocation_id:
                return Observed(state=state, running=observed.running, container_id=known[1])
        return observed

    def compose(self, about_to_queue: Mapping[str, str] | None = None) -> list[ActiveService]:
        """The statuses; `about_to_queue` (unit → start/restart) shows jobs a pass decided but has not queued
        yet as pending, as they will be."""
        desired, services = self._desired, []
        jobs_by_unit: dict[str, list[str]] = {}
        for job in self._jobs.values():
            jobs_by_unit.setdefault(job.unit, []).append(job.operation)
        for unit, operation in (about_to_queue or {}).items():
            jobs_by_unit.setdefault(unit, []).append(operation)
        for instance in desired.instances:
            if instance.name in self._targets and self._targets[instance.name] is None:
                kind = effective_spec(self.settings, instance).type
                services.append(describe_resource(instance, kind, desired.generation))
                continue
            services.append(describe(instance, self._targets.get(instance.name), self._observe(instance, jobs_by_unit),
                                     desired.generation, unit_name(instance.name)))
        for unit, state in sorted(self._states.items()):
            name = _instance_of(unit)
            if name in self._targets or state.active_state in ("inactive", "failed"):
                continue
            stored = self._files.get(name)
            services.append(describe_leaving(name, state, _spec_of(stored) if stored else None, desired.generation))
        return services

    def _publish(self, about_to_queue: Mapping[str, str] | None = None) -> list[ActiveService]:
        self._news, self._published_at = False, time.monotonic()
        services = self._publish_composed(about_to_queue)
        # Container ids come from Podman, which is slower than systemd: the status goes out first.
        found = False
        missing = [s for s in services
                   if s.status == "available" and s.info.get("invocation") and s.info.get("container_id") is None]
        ids = self._container_ids_of([s.name for s in missing]) if missing else {}
        for service in missing:
            container = ids.get(service.name)
            if container is not None:
                self._container_ids[service.name] = (str(service.info["invocation"]), container)
                found = True
        return self._publish_composed(about_to_queue) if found else services

    def _publish_composed(self, about_to_queue: Mapping[str, str] | None = None) -> list[ActiveService]:
        services = self.compose(about_to_queue)
        if services != self._published:
            self._published = services
            if log.isEnabledFor(logging.DEBUG):
                log.debug("publish: %s", "; ".join(f"{s.name} {s.status} {s.info.get('active_state')}/"
                                                   f"{s.info.get('sub_state')} {s.info.get('reason', '')}"
                                                   for s in services))
            self.publish(services)
        return services

    def _container_ids_of(self, names: list[str]) -> dict[str, str]:
        """The running containers of these instances (a restart is a new invocation and a new container),
        in one Podman call however many instances became available at once."""
        if self.podman is None:
            return {}
        try:
            ids = self.podman.running_ids([container_name(name) for name in names])
        except PodmanUnavailable:
            return {}
        return {name: ids[container_name(name)] for name in names if container_name(name) in ids}

    def _failure_reason(self, instance: DesiredInstance, state: UnitState) -> str:
        known = self._failures.get(instance.name)
        if known is not None and known[0] == state.state_change_usec:
            return known[1]
        spec = effective_spec(self.settings, instance)
        logs = container_log_tail(container_name(instance.name), 20, command_prefix=self.journal_prefix)
        reason = explain_failure(state, image=spec.image, has_health_check=spec.health is not None, logs=logs,
                                 podman=self.podman)
        self._failures[instance.name] = (state.state_change_usec, reason)
        return reason
