# SPDX-License-Identifier: AGPL-3.0-or-later
"""The profiling queue, run for real: one instance at a time, alone, while nothing else is desired.

For each queued item (service, variety, profile) the profiler starts the instance as a normal Ozwald
unit (the reconciler renders and starts it like any other, through its `run_besides` hook), measures it
(`ozwald.resources.procs`: time to ready from systemd's timestamps, RAM of the container's processes,
CPU, VRAM per GPU), holds it for `profiling.hold` once ready, stops it, and records the result under
(service, variety, profile, spec hash). A failed start is recorded as failed, with the reason the status
gives.

A run only happens while the orchestrator's desired set has no container instance. An update that makes
it non-empty wins at once: `run_besides` returns nothing for that desired set, so the very pass that
starts the update's instances stops the profiled one; the profiler sees it and puts its item back at the
front of the queue, to run again when the host is idle. Items survive a restart (the queue is durable);
an item that was running when the process ended runs again from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ozwald.config import ResolveError, Settings, resolve
from ozwald.config.model import ProfilingSettings
from ozwald.errors import OzwaldError
from ozwald.provisioner.requests import HostCapabilities, validate_requests
from ozwald.quadlet.naming import unit_name
from ozwald.records import ActiveService, DesiredInstance, DesiredSet, ServiceRequest, UpdateError
from ozwald.resources import HostResourceMonitor
from ozwald.resources.procs import PAYLOAD_METHOD, FootprintSampler, cgroup_pids, unit_cgroup
from ozwald.state import ProfileQueue, ProfileRequest, ProfileResult, ProfileResults, StateError
from ozwald.systemd import SystemdClient, SystemdError
from ozwald.systemd.protocol import UnitState

if TYPE_CHECKING:
    from ozwald.provisioner.reconciler import Reconciler

log = logging.getLogger(__name__)

PREFIX = "profiling-"
IDLE_POLL_S = 2.0  # an idle profiler looks at the queue at least this often (a missed wake-up costs no more)
READY_GRACE_S = 30.0  # beyond the spec's start timeout, before a run that never became ready is given up
STATUS_WAIT_S = 5.0  # how long a failed unit's status (with its reason) is awaited


def profiling_instance(service: str) -> str:
    """The instance name a profiling run uses (`profiling-<service>`, cut to the 63 characters a name has)."""
    return (PREFIX + service)[:63].rstrip("-.") or PREFIX.rstrip("-")


def has_containers(settings: Settings, desired: DesiredSet) -> bool:
    """Whether the orchestrator wants any container instance (non-container resources do not load the host)."""
    for instance in desired.instances:
        service = settings.service(instance.service)
        if service is None or service.type == "container":
            return True
    return False


class Preempted(OzwaldError):
    """A profiling run gave way to a desired-set change; caught by the profiler (escaping, a bug: 70, 500)."""


class Profiler:
    def __init__(self, settings: Settings, queue: ProfileQueue, results: ProfileResults,
                 read_desired: Callable[[], DesiredSet], systemd: SystemdClient, resources: HostResourceMonitor,
                 capabilities: Callable[[], HostCapabilities], status_of: Callable[[str], ActiveService | None],
                 profiling: ProfilingSettings | None = None, on_change: Callable[[], None] | None = None) -> None:
        self.settings = settings
        # Called after each write to the queue or the results: the API's blocking queries wake on it.
        self.on_change = on_change or (lambda: None)
        self.profiling = profiling or ProfilingSettings()
        self.queue = queue
        self.results = results
        self.read_desired = read_desired
        self.systemd = systemd
        self.resources = resources
        self.capabilities = capabilities
        self.status_of = status_of
        self.reconciler: Reconciler | None = None
        self._current: DesiredInstance | None = None
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    # The reconciler's hook and the other threads' doors ----------------------------------------------

    def attach(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        reconciler.run_besides = self.run_besides

    def run_besides(self, desired: DesiredSet) -> Sequence[DesiredInstance]:
        """What the reconciler runs besides `desired`: the profiled instance, only while nothing else is."""
        with self._lock:
            current = self._current
        if current is None or has_containers(self.settings, desired):
            return ()
        return (current,)

    @property
    def current(self) -> DesiredInstance | None:
        with self._lock:
            return self._current

    def wake(self) -> None:
        """Something changed (the desired set, the queue, a status): look now."""
        self._interrupt.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ozwald-profiler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _set_current(self, instance: DesiredInstance | None) -> None:
        with self._lock:
            self._current = instance
        if self.reconciler is not None:
            self.reconciler.wake()

    def _pause(self, seconds: float) -> None:
        self._interrupt.wait(seconds)
        self._interrupt.clear()

    # The worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        # Nothing starts before the reconciler's first pass, which stops what a previous process left running.
        while not self._stop.is_set() and (self.reconciler is None or not self.reconciler.first_pass_done.is_set()):
            self._stop.wait(0.2)
        while not self._stop.is_set():
            try:
                self.queue.reset_running()
                self.on_change()
                break
            except StateError as exc:
                log.warning("profiling queue unreadable: %s; retrying", exc)
                self._stop.wait(IDLE_POLL_S)
        while not self._stop.is_set():
            try:
                self._turn()
            except StateError as exc:
                log.warning("profiler: %s; retrying in %g s", exc, IDLE_POLL_S)
                if self.current is not None:
                    self._set_current(None)
                self._pause(IDLE_POLL_S)
            except Exception:  # the profiler must not die on one bad run
                log.exception("profiler: a run failed unexpectedly")
                if self.current is not None:
                    self._set_current(None)
                self._pause(IDLE_POLL_S)

    def _turn(self) -> None:
        item = self.queue.first()
        if item is None:
            self._pause(IDLE_POLL_S)
            return
        desired = self.read_desired()
        if has_containers(self.settings, desired):
            why = f"waiting: generation {desired.generation} desires {len(desired.instances)} instance(s)"
            if item.phase != why or item.state != "queued":
                self.queue.mark(item.item_id, why, running=False)
                self.on_change()
            self._pause(IDLE_POLL_S)
            return
        self.run_item(item)

    def run_item(self, item: ProfileRequest) -> ProfileResult | None:
        """Run one item to its end: a recorded result, or back in the queue when preempted (None)."""
        settings = self.settings
        profiling = self.profiling
        name = profiling_instance(item.service)
        started_at = datetime.now(UTC)
        try:
            [instance] = validate_requests(settings, [ServiceRequest(name=name, service=item.service,
                                                                     variety=item.variety, profile=item.profile)],
                                           self.capabilities())
            spec = resolve(settings, instance.service, instance.variety, instance.profile)
        except (UpdateError, ResolveError) as exc:
            result = ProfileResult(service=item.service, variety=item.variety, profile=item.profile, spec_hash="",
                                   outcome="failed", reason=f"cannot profile: {exc}", request_id=item.request_id,
                                   item_id=item.item_id, started_at=started_at, finished_at=datetime.now(UTC))
            self.results.record(result)
            self.queue.finish(item.item_id)
            self.on_change()
            return result
        unit = unit_name(name)
        # A clean slate: nothing of a previous run may be measured, and a failed unit left by one (its file
        # not yet removed) would be held as failed instead of started.
        self._wait_down(unit, spec.stop_timeout + 15, accept_failed=False)
        snapshot = self.resources.snapshot()
        baseline = {g.id: g.vram_used_mib for g in snapshot.gpus if g.vram_used_mib is not None}
        self.queue.mark(item.item_id, "starting", attempt=True)
        self.on_change()
        log.info("profiling %s (variety %s, profile %s, spec %s)", item.service, instance.variety, instance.profile,
                 spec.spec_hash)
        start_wall_usec = int(time.time() * 1e6)
        self._set_current(instance.model_copy(update={"profiled": True}))
        # Until Podman made the container's payload cgroup, the unit's cgroup holds `podman run` itself
        # (tens of MiB): those samples go to a fallback, used only if no payload cgroup ever shows up.
        payload = FootprintSampler()
        fallback = FootprintSampler()
        sampler = payload
        method = ""
        ready_s: float | None = None
        ready_at: float | None = None
        cpu_to_ready: float | None = None
        failure: str | None = None
        deadline = time.monotonic() + spec.start_timeout + READY_GRACE_S
        failed_since: float | None = None
        try:
            while True:
                if self._stop.is_set():
                    raise Preempted("the provisioner is stopping")
                desired = self.read_desired()
                if has_containers(settings, desired):
                    raise Preempted(f"preempted by generation {desired.generation}; runs again once nothing is desired")
                state = self._state(unit)
                pids: list[int] = []
                in_payload = False
                if state is not None and state.active_state in ("active", "activating", "reloading", "deactivating"):
                    cgroup = unit_cgroup(unit, state.main_pid)
                    if cgroup is not None:
                        pids, found = cgroup_pids(cgroup)
                        in_payload = found == PAYLOAD_METHOD
                        if in_payload or not method:
                            method = found
                now = time.monotonic()
                gpus = self.resources.snapshot() if snapshot.gpus else None
                (payload if in_payload else fallback).sample(now, pids, gpus, baseline)
                sampler = payload if payload.ram_peak_kib or payload.vram_peak_mib else fallback
                if ready_at is None:
                    if state is not None and state.active_state == "active" and state.exec_main_start_usec \
                            and state.exec_main_start_usec >= start_wall_usec - 1_000_000 \
                            and state.active_enter_usec >= state.exec_main_start_usec:
                        ready_at = now
                        ready_s = round((state.active_enter_usec - state.exec_main_start_usec) / 1e6, 3)
                        cpu_to_ready = sampler.cpu_seconds()
                        self.queue.mark(item.item_id, f"holding for {profiling.hold:g} s")
                        self.on_change()
                    else:
                        status = self.status_of(name)
                        reason = self._failure(status, state)
                        if reason is not None:
                            failed_since = failed_since or now
                            if (status is not None and status.info.get("reason")) or now - failed_since > STATUS_WAIT_S:
                                failure = str(status.info.get("reason")) if status and status.info.get("reason") \
                                    else reason
                                break
                        elif now > deadline:
                            failure = f"never became ready within {spec.start_timeout + READY_GRACE_S:g} s"
                            break
                elif now - ready_at >= profiling.hold:
                    break
                elif state is None or state.active_state != "active":
                    status = self.status_of(name)
                    failure = (str(status.info["reason"]) if status and status.info.get("reason")
                               else f"stopped while held: {state.active_state if state else 'gone'}")
                    break
                self._pause(profiling.sample_interval)
        except Preempted as exc:
            self._set_current(None)
            log.info("profiling %s: %s", item.service, exc)
            if not self._stop.is_set():
                self.queue.requeue_front(item.item_id, str(exc))
                self.on_change()
            return None
        held_until = time.monotonic()
        self.queue.mark(item.item_id, "stopping")
        self.on_change()
        self._set_current(None)
        self._wait_down(unit, spec.stop_timeout + 15)
        self._wait_unpublished(name, STATUS_WAIT_S)
        steady = sampler.ram_steady_mib(ready_at) if ready_at is not None else None
        mean_cores, peak_cores = sampler.cpu_cores(ready_at) if ready_at is not None else (None, None)
        result = ProfileResult(
            service=item.service, variety=instance.variety, profile=instance.profile, spec_hash=spec.spec_hash,
            outcome="failed" if failure else "measured", reason=failure, request_id=item.request_id,
            item_id=item.item_id, started_at=started_at, finished_at=datetime.now(UTC), ready_s=ready_s,
            ready_by=("health check" if spec.health is not None else f"minimum uptime ({spec.min_uptime:g} s)"),
            ram_peak_mib=sampler.ram_peak_mib if sampler.ram_peak_kib else None, ram_steady_mib=steady,
            ram_method=(f"procfs VmRSS/VmHWM of {PAYLOAD_METHOD if sampler is payload else method}"
                        if sampler.ram_peak_kib else None),
            cpu_seconds_to_ready=cpu_to_ready, cpu_cores_steady=mean_cores, cpu_cores_peak=peak_cores,
            vram_peak_mib=dict(sampler.vram_peak_mib),
            vram_method=", ".join(sorted(sampler.vram_methods)) or ("no GPU use seen" if snapshot.gpus else "no GPU"),
            held_s=round(held_until - ready_at, 2) if ready_at is not None else None, samples=sampler.samples)
        self.results.record(result)
        self.queue.finish(item.item_id)
        self.on_change()
        self.runs += 1
        log.info("profiled %s/%s/%s: %s", item.service, instance.variety, instance.profile,
                 failure or f"ready in {ready_s} s, RAM peak {result.ram_peak_mib} MiB, steady {steady} MiB, "
                            f"VRAM {result.vram_peak_mib or '-'}")
        return result

    @staticmethod
    def _failure(status: ActiveService | None, state: UnitState | None) -> str | None:
        if status is not None and status.status == "failed":
            return str(status.info.get("reason") or "failed")
        if status is not None and status.info.get("restarting"):
            return str(status.info.get("reason") or "crashed; systemd is restarting it")
        if state is not None and state.active_state == "failed":
            return f"the unit failed ({state.result or 'no result'})"
        return None

    def _state(self, unit: str) -> UnitState | None:
        try:
            state = self.systemd.unit_state(unit)
        except SystemdError:
            return None
        return state if state.load_state == "loaded" else None

    def _wait_unpublished(self, name: str, timeout: float) -> None:
        """Until the reconciler no longer shows the instance: a recorded result means the run is over."""
        deadline = time.monotonic() + timeout
        while self.status_of(name) is not None and time.monotonic() < deadline:
            self._pause(0.1)

    def _wait_down(self, unit: str, timeout: float, accept_failed: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        down = ("inactive", "failed") if accept_failed else ("inactive",)
        while time.monotonic() < deadline:
            state = self._state(unit)
            if state is None or state.active_state in down:
                return True
            self._pause(0.2)
        log.warning("profiling unit %s still %s after %g s", unit, "running", timeout)
        return False
