# SPDX-License-Identifier: AGPL-3.0-or-later
"""The one worker that makes systemd match the desired set.

It wakes at once when an update is stored (`wake()`), when systemd signals that an Ozwald unit nobody
wants came up, and on a slow periodic resync; other unit signals only refresh the statuses. Each pass
reads the desired set, renders every instance, compares with the unit files and unit states on the host
(`plan`), then applies: stop what was removed, write every changed file, reload systemd once, and queue
starts and restarts in parallel. It never blocks on a start: the end of each start job and the unit
signals that follow refresh the published statuses (see `observed`).

On start-up the same pass adopts what is already running: units whose spec hash matches are left alone,
units nobody wants any more are stopped and their files removed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from jeepney import HeaderFields

from ozwald.config import Settings
from ozwald.diagnose import explain_failure
from ozwald.podman import PodmanInspector, PodmanUnavailable
from ozwald.provisioner.models import ActiveService, DesiredInstance, DesiredSet, PlanEntry
from ozwald.provisioner.observed import ObservedUnits
from ozwald.provisioner.plan import Target, plan
from ozwald.provisioner.requests import effective_spec
from ozwald.provisioner.status import since, status_of
from ozwald.quadlet import RenderedUnit, render_unit
from ozwald.quadlet.keys import NEWEST_KNOWN, Version
from ozwald.quadlet.render import OWN_UNITS, unit_name
from ozwald.systemd import SystemdClient, SystemdError
from ozwald.systemd.journal import container_log_tail
from ozwald.systemd.protocol import UnitState, parse_job_removed, unit_name_from_path
from ozwald.units import UnitStore

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0


@dataclass
class PassReport:
    generation: int
    entries: list[PlanEntry] = field(default_factory=list)
    reloaded: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _hold_failed(entry: PlanEntry, state: UnitState | None) -> PlanEntry:
    """Keep an unchanged instance that already ran and ended; one written but never started still starts
    (a provisioner killed between writing and starting must converge)."""
    ran = state is not None and (state.active_state == "failed" or state.exec_main_start_usec > 0)
    if entry.action == "start" and entry.reason.startswith("start: unchanged but") and ran:
        ended = entry.reason.removeprefix("start: unchanged but ")
        return entry.model_copy(update={"action": "keep", "reason": f"keep: {ended}; post the desired set to retry"})
    return entry


class Reconciler:
    def __init__(self, settings: Settings, read_desired: Callable[[], DesiredSet], systemd: SystemdClient,
                 units: UnitStore, publish: Callable[[list[ActiveService]], None], *,
                 podman: PodmanInspector | None = None, podman_version: Version = NEWEST_KNOWN,
                 journal_prefix: Sequence[str] = (), resync_interval: float = 60.0) -> None:
        self.settings = settings
        self.read_desired = read_desired
        self.systemd = systemd
        self.units = units
        self.publish = publish
        self.podman = podman
        self.podman_version = podman_version
        self.journal_prefix = tuple(journal_prefix)
        self.resync_interval = resync_interval
        self._wake = threading.Event()
        self._wake_lock = threading.Lock()
        self._wanted_generation = 0  # the newest generation a wake-up asked for or a pass read
        self._stop = threading.Event()
        self._lock = threading.RLock()  # one pass at a time
        self._publish_lock = threading.Lock()  # statuses go out in the order they were composed
        self.observed = ObservedUnits()
        self._desired = DesiredSet()
        self._failure_reasons: dict[tuple[str, int], str] = {}  # (instance, state change µs) → reason
        self._container_ids: dict[tuple[str, str], str] = {}  # (instance, unit invocation) → container id
        self._threads: list[threading.Thread] = []
        self.last_report: PassReport | None = None
        # Failed instances are retried when a new generation arrives (an explicit wish), never by a resync
        # or a restart of the provisioner: systemd's Restart= policy already decided to give up on them.
        self._applied_generation: int | None = None
        self.passes = 0
        self.unit_reads = 0  # single-unit reads by the refresher: an idle provisioner does none
        # Set when the connection to systemd is gone for good: statuses can no longer be true, so the
        # process should exit and be restarted (it adopts what runs); see ozwald.provisioner.process.
        self.bus_lost = threading.Event()
        # For the service manager: set once the first pass has read systemd (READY=1), and the monotonic
        # time of the worker's last turn (WATCHDOG=1 only while it keeps turning; it turns at least every
        # HEARTBEAT_S seconds, idle or not).
        self.first_pass_done = threading.Event()
        self.heartbeat = time.monotonic()

    # Life cycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._loop, "ozwald-reconciler"), (self._watch_units, "ozwald-unit-watch"),
                             (self._watch_jobs, "ozwald-job-watch"), (self._refresh_loop, "ozwald-refresher")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.wake()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads) and not self.bus_lost.is_set()

    def wake(self, generation: int | None = None) -> None:
        """Ask for a pass. With a generation, a wake-up for one already asked for or read is dropped: one
        update reaches this process twice (directly and through Redis pub/sub) and needs one pass."""
        with self._wake_lock:
            if generation is not None:
                if generation <= self._wanted_generation:
                    return
                self._wanted_generation = generation
        self._wake.set()

    def replace_settings(self, settings: Settings) -> None:
        """New settings (a reload of the settings file): the next pass, asked for now, renders with them."""
        self.settings = settings
        self.wake()

    def _loop(self) -> None:
        next_resync = time.monotonic()
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            woken = self._wake.wait(min(HEARTBEAT_S, max(0.0, next_resync - time.monotonic())))
            self.heartbeat = time.monotonic()
            if not woken and time.monotonic() < next_resync:
                continue
            self._wake.clear()
            if self._stop.is_set():
                return
            next_resync = time.monotonic() + self.resync_interval
            try:
                self.run_once()
                self.first_pass_done.set()
            except Exception:  # the worker must survive anything one pass hits
                log.exception("reconcile pass failed; retrying at the next wake-up")

    def _watch_units(self) -> None:
        """Mark the Ozwald units that signalled a change; the refresher reads just those."""
        with self.systemd.unit_changes() as changes:
            while not self._stop.is_set():
                try:
                    messages = [changes.get(timeout=0.5)]
                except Empty:
                    if not self.systemd.alive:
                        log.error("the connection to systemd's bus is lost: no unit signal can arrive any more")
                        self.bus_lost.set()
                        return
                    continue
                while not changes.empty():  # a state change comes as a burst
                    messages.append(changes.get_nowait())
                units = set()
                for message in messages:
                    unit = unit_name_from_path(str(message.header.fields.get(HeaderFields.path, "")))
                    if (unit is not None and unit.startswith("ozwald-") and unit.endswith(".service")
                            and unit not in OWN_UNITS):
                        units.add(unit)
                self.observed.mark_dirty(units)

    def _watch_jobs(self) -> None:
        """A start job that ends `done` makes its instance `available` at once, before any other read."""
        with self.systemd.job_removals() as removals:
            while not self._stop.is_set():
                try:
                    message = removals.get(timeout=0.5)
                except Empty:
                    continue
                event = parse_job_removed(message.body)
                if self.observed.job_removed(event.job_path, event.result) is not None and event.result == "done":
                    self._publish_safely()

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            units = self.observed.take_dirty(timeout=0.5)
            if not units:
                continue
            try:
                self._refresh_units(units)
            except Exception:
                log.exception("status refresh failed")
                self.observed.mark_dirty(units)
                self._stop.wait(1.0)

    def _refresh_units(self, units: set[str]) -> None:
        before = self.observed.versions()
        wanted = {unit_name(instance.name) for instance in self._desired.instances}
        orphans = []
        for unit in sorted(units):
            self.unit_reads += 1
            state = self.systemd.unit_state(unit)
            self.observed.put(state, before)
            if unit not in wanted and state.active_state in ("active", "activating", "reloading"):
                orphans.append(unit)
        self._publish_statuses()
        if orphans:  # an Ozwald unit nobody wants came up (started by hand, or by an older process)
            log.info("unwanted units running: %s; reconciling now", ", ".join(orphans))
            self.wake()

    def _publish_safely(self) -> None:
        try:
            self._publish_statuses()
        except Exception:
            log.exception("publishing statuses failed")

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
            spec = effective_spec(self.settings, instance)
            targets.append(Target(instance, unit.spec_hash))
            rendered[instance.name] = (unit, spec.persistent)
        return targets, rendered

    def states(self) -> dict[str, UnitState]:
        return {state.name: state for state in self.systemd.list_units("ozwald-*.service")
                if state.name not in OWN_UNITS}

    def preview(self, desired: DesiredSet) -> list[PlanEntry]:
        """What a pass would do for `desired`, without doing it (the plan endpoint)."""
        targets, _ = self.targets(desired)
        return plan(self.settings, targets, self.units.existing(), self.states())

    def run_once(self) -> PassReport:
        with self._lock:
            started = time.monotonic()
            desired = self.read_desired()
            with self._wake_lock:
                self._wanted_generation = max(self._wanted_generation, desired.generation)
            targets, rendered = self.targets(desired)
            existing = self.units.existing()
            states = self._read_all()
            self._desired = desired
            entries = plan(self.settings, targets, existing, states)
            if desired.generation == self._applied_generation or self._applied_generation is None:
                entries = [_hold_failed(e, states.get(unit_name(e.name))) for e in entries]
            self._applied_generation = desired.generation
            report = PassReport(generation=desired.generation, entries=entries)
            by_action: dict[str, list[str]] = {"start": [], "stop": [], "restart": [], "keep": []}
            for entry in entries:
                by_action[entry.action].append(entry.name)

            to_stop = [unit_name(n) for n in by_action["stop"]]
            if to_stop:
                self.observed.forget_jobs(to_stop)
                self.systemd.stop(to_stop, timeout=300)
                for unit in to_stop:  # a stop can end failed (killed after its timeout): unload it cleanly
                    self._reset_failed(unit)
            sync = self.units.sync(rendered.values())
            if sync.changed:
                self.systemd.reload()
                report.reloaded = True
            # A new generation is an explicit wish: retry desired instances that failed (the start limit too).
            for name in by_action["start"]:
                state = states.get(unit_name(name))
                if state is not None and state.failed:
                    self._reset_failed(unit_name(name))
            self._queue("start", by_action["start"], report)
            self._queue("restart", by_action["restart"], report)
            report.seconds = time.monotonic() - started
            self.last_report = report
            self.passes += 1
            if any(e.action != "keep" for e in entries):
                log.info("generation %d: %s", desired.generation,
                         "; ".join(e.reason.replace(":", f" {e.name}:", 1) for e in entries if e.action != "keep"))
        self._publish_statuses()
        return report

    def _reset_failed(self, unit: str) -> None:
        with contextlib.suppress(SystemdError):  # not failed, or not loaded: nothing to reset
            self.systemd.reset_failed(unit)

    def _queue(self, operation: str, names: list[str], report: PassReport) -> None:
        if not names:
            return
        queued = self.systemd.enqueue(operation, [unit_name(n) for n in names])
        for name in names:
            result = queued[unit_name(name)]
            if isinstance(result, SystemdError):
                report.errors[name] = result.message
                log.warning("%s %s refused by systemd: %s", operation, name, result.message)
            else:
                self.observed.job_queued(result, unit_name(name))

    # Statuses ----------------------------------------------------------------------------------------

    def refresh_statuses(self) -> list[ActiveService]:
        """Read every Ozwald unit and publish; the running reconciler only reads units that changed."""
        self._read_all()
        return self._publish_statuses()

    def _read_all(self) -> dict[str, UnitState]:
        """Every Ozwald unit's state, read now and stored where no newer fact arrived meanwhile."""
        before = self.observed.versions()
        states = self.states()
        self.observed.replace_all(states, before)
        return states

    def _publish_statuses(self) -> list[ActiveService]:
        self._explain_failures()  # journal and Podman reads happen before the lock, not under it
        with self._publish_lock:
            services = self._compose()
            self.publish(services)
        # Container ids come from Podman, which is slower than systemd: publish the status first, then the ids.
        missing = [s for s in services if s.status == "available" and s.info.get("container_id") is None
                   and s.info.get("invocation")]
        found = [self._container_id(s.name, str(s.info["invocation"])) for s in missing]
        if any(found):
            with self._publish_lock:
                services = self._compose()
                self.publish(services)
        return services

    def _compose(self) -> list[ActiveService]:
        view = self.observed.view()
        desired = self._desired
        services: list[ActiveService] = []
        seen: set[str] = set()
        for instance in desired.instances:
            seen.add(instance.name)
            unit = unit_name(instance.name)
            services.append(self._describe(instance, view.states.get(unit), True, unit in view.pending,
                                           desired.generation))
        for name, state in sorted(view.states.items()):
            instance_name = name.removeprefix("ozwald-").removesuffix(".service")
            if instance_name in seen or state.active_state in ("inactive", "failed"):
                continue
            services.append(self._describe(None, state, False, False, desired.generation, instance_name))
        return services

    def _explain_failures(self) -> None:
        view = self.observed.view()
        for instance in self._desired.instances:
            unit = unit_name(instance.name)
            state = view.states.get(unit)
            if state is not None and status_of(state, True, unit in view.pending) == "failed":
                self._failure_reason(instance.name, state, effective_spec(self.settings, instance))

    def _describe(self, instance: DesiredInstance | None, state: UnitState | None, desired: bool, pending: bool,
                  generation: int, name: str | None = None) -> ActiveService:
        name = instance.name if instance is not None else (name or "")
        unit = unit_name(name)
        spec = None
        if instance is not None:
            spec = effective_spec(self.settings, instance)
        info: dict[str, Any] = {"unit": unit, "generation": generation}
        if instance is not None and instance.variety_auto:
            info["variety_chosen"] = f"{instance.variety} (picked for this host)"
        if spec is not None and spec.type != "container":
            info["unit"] = None
            return ActiveService(name=name, service=instance.service if instance else name,
                                 variety=instance.variety if instance else None,
                                 profile=instance.profile if instance else None, status="available",
                                 info={**info, "reason": f"{spec.type}: a resource, not a container"})
        status = status_of(state, desired, pending)
        if state is not None:
            info.update({"active_state": state.active_state, "sub_state": state.sub_state,
                         "since": since(state), "restarts": state.n_restarts})
        if status == "available" and state is not None:
            info["container_id"] = self._container_ids.get((name, state.invocation_id))  # none for "" (inferred)
            info["invocation"] = state.invocation_id or None
        if status == "failed" and state is not None:
            info["reason"] = self._failure_reason(name, state, spec)
            info["result"] = state.result
            info["exit_status"] = state.exec_main_status
        return ActiveService(name=name, service=instance.service if instance else name,
                             variety=instance.variety if instance else None,
                             profile=instance.profile if instance else None, status=status, info=info)

    def _container_id(self, name: str, invocation: str) -> str | None:
        """The container of this run of the unit: a restart is a new invocation and a new container."""
        if (name, invocation) in self._container_ids:
            return self._container_ids[(name, invocation)]
        if self.podman is None:
            return None
        try:
            container = self.podman.container(f"ozwald-{name}")
        except PodmanUnavailable:
            return None
        if container is None:
            return None
        for key in [k for k in self._container_ids if k[0] == name]:
            self._container_ids.pop(key, None)
        self._container_ids[(name, invocation)] = container.id
        return container.id

    def _failure_reason(self, name: str, state: UnitState, spec: Any) -> str:
        key = (name, state.state_change_usec)
        if key not in self._failure_reasons:
            logs = container_log_tail(f"ozwald-{name}", 20, command_prefix=self.journal_prefix)
            self._failure_reasons[key] = explain_failure(
                state, image=getattr(spec, "image", None), has_health_check=getattr(spec, "health", None) is not None,
                logs=logs, podman=self.podman)
        return self._failure_reasons[key]

