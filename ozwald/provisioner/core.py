# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner core behind the HTTP API: settings, desired state, statuses, resources, reconciler.

Reads are served from memory (statuses the reconciler last published, a resource snapshot), so the
polled endpoints never wait on systemd. An update goes to the desired-state store (its file, then Redis'
copy) and then wakes the reconciler; this process is the store's only writer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ozwald.config import ResolveError, Settings, resolve
from ozwald.config.model import AdmissionSettings, ProfilingSettings
from ozwald.config.secrets import public_service
from ozwald.provisioner.admission import Fit, FootprintLookup, assess, place, reservations
from ozwald.provisioner.footprints import footprint_lookup
from ozwald.provisioner.observe import StatusObserver
from ozwald.provisioner.ports import (
    PortConflict,
    host_listeners,
    port_conflicts,
    ports_in_unit_file,
    published_ports,
)
from ozwald.provisioner.profile_items import profile_items
from ozwald.provisioner.profiler import Profiler
from ozwald.provisioner.reconciler import Reconciler
from ozwald.provisioner.requests import HostCapabilities, validate_requests
from ozwald.provisioner.status_writer import StatusWriter
from ozwald.provisioner.wake import check_listening, check_nudge
from ozwald.records import (
    ActiveService,
    AdmissionError,
    CoreUnavailable,
    DesiredInstance,
    DesiredSet,
    NudgeAccepted,
    NudgeOperation,
    PlanEntry,
    ServiceRequest,
    UpdateError,
)
from ozwald.resources import HostResourceMonitor, HostSnapshot, available_resources_view, host_resources_view
from ozwald.resources.cdi import cdi_device_names
from ozwald.state import (
    DesiredStateStore,
    ProfileQueue,
    ProfileResult,
    ProfileResults,
    QueueFull,
    StateError,
    StateUnavailable,
    StatusCache,
    result_json,
)
from ozwald.systemd import SystemdClient

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)


class Provisioner:
    """Implements `ozwald.api.core.ProvisionerCore`; thread-safe."""

    def __init__(self, settings: Settings, desired: DesiredStateStore, statuses: StatusCache, profiles: ProfileQueue,
                 resources: HostResourceMonitor, systemd: SystemdClient, reconciler_factory: Any, *,
                 results: ProfileResults | None = None, profiling: ProfilingSettings | None = None,
                 admission: AdmissionSettings | None = None) -> None:
        self.settings = settings
        self.results = results
        self.profiling = profiling or ProfilingSettings()
        self.admission = admission or AdmissionSettings()
        self.desired = desired
        self.statuses = statuses
        copies: list[Callable[[], object]] = [desired.document.sync_cache, profiles.document.sync_cache]
        if results is not None:
            copies.append(results.document.sync_cache)
        self.status_writer = StatusWriter(statuses, keep=copies)
        self.profiles = profiles
        self.resources = resources
        self.systemd = systemd
        self._published: list[ActiveService] | None = None
        # Restarts, failures, start times and transitions, counted from the published statuses (metrics).
        self.observer = StatusObserver()
        self._read_generation: int | None = None  # the generation the reconciler last read
        self._reserved: tuple[Any, dict[str, float]] | None = None  # (what it was computed from, GPU id → MiB)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Milliseconds since the epoch at start-up, then +1 per change: a revision from before a restart of
        # the provisioner is always lower than any of the new process's, so no client waits on a stale one.
        self._revision = time.time_ns() // 1_000_000
        self._profile_revision = self._revision  # the same, for the profiling queue and its results
        self.reconciler: Reconciler = reconciler_factory(self._read_desired, self._publish)
        # The profiling queue runs only with a results store to record into.
        self.profiler: Profiler | None = None
        if results is not None:
            self.profiler = Profiler(settings, profiles, results, self.desired.read, systemd, resources,
                                     self._host_capabilities, self._status_of, self.profiling,
                                     on_change=self._profile_changed)
            self.profiler.attach(self.reconciler)

    # Life cycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.resources.start()
        self.status_writer.start()
        self.reconciler.start()
        if self.profiler is not None:
            self.profiler.start()

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
        self.reconciler.stop()
        self.status_writer.stop()
        self.resources.stop()

    def replace_settings(self, settings: Settings) -> None:
        """Settings re-read from the file (`systemctl reload ozwald`); the caller has validated them."""
        self.settings = settings
        self.profiles.settings = settings
        if self.profiler is not None:
            self.profiler.settings = settings
        self.reconciler.replace_settings(settings)

    def _read_desired(self) -> DesiredSet:
        desired = self.desired.read()
        self._read_generation = desired.generation  # what the statuses published next answer to
        return desired

    def _publish(self, services: list[ActiveService]) -> None:
        with self._changed:
            changed = services != self._published
            if changed:
                self._published = services
                self._revision += 1
                self._changed.notify_all()
        if changed:
            self.observer.observe(services, self._read_generation)
        if self.profiler is not None:
            self.profiler.wake()
        self.status_writer.offer(services)

    # ProvisionerCore ---------------------------------------------------------------------------------

    def configured_services(self) -> list[dict[str, Any]]:
        """The settings' services (secrets masked), each variety and profile with its profiling results
        (`profiling`)."""
        services = [public_service(service) for service in self.settings.services]
        results = self._profile_results()
        for service in services:
            for result in (r for r in results if r.service == service["name"]):
                shown = self._result_json(result)
                if result.variety is not None and result.variety in service.get("varieties", {}):
                    service["varieties"][result.variety].setdefault("profiling", {}).setdefault(
                        result.profile or "-", shown)
                if result.profile is not None and result.profile in service.get("profiles", {}):
                    service["profiles"][result.profile].setdefault("profiling", {}).setdefault(
                        result.variety or "-", shown)
                if result.variety is None and result.profile is None:
                    service.setdefault("profiling", shown)
        return services

    def _status_of(self, name: str) -> ActiveService | None:
        with self._lock:
            published = self._published
        return next((s for s in published or () if s.name == name), None)

    def active_services(self) -> list[ActiveService]:
        with self._lock:
            published = self._published
        if published is not None:
            return published
        try:
            return self.statuses.read_all()
        except StateUnavailable as exc:
            raise CoreUnavailable("cache unavailable") from exc

    def watch_active(self, after: int | None, wait: float) -> tuple[int, list[ActiveService]]:
        with self._changed:
            if after is not None and after == self._revision and self._published is not None and wait > 0:
                self._changed.wait_for(lambda: self._revision != after, wait)
            published, revision = self._published, self._revision
        if published is None:  # nothing reconciled yet in this process: what the cache last had
            return revision, self.active_services()
        return revision, published

    def _host_capabilities(self) -> HostCapabilities:
        return self._capabilities(self.resources.snapshot())

    def _capabilities(self, snapshot: HostSnapshot) -> HostCapabilities:
        names, _ = cdi_device_names()
        return HostCapabilities(gpu_vendors=frozenset(g.vendor for g in snapshot.gpus), cdi_names=frozenset(names),
                                has_kfd=os.path.exists("/dev/kfd"))

    def _admit(self, items: list[ServiceRequest]
               ) -> tuple[list[DesiredInstance], Fit, HostSnapshot, list[PortConflict]]:
        """Validate, keep existing GPU pins, place new single-GPU instances, assess the fit, check ports."""
        snapshot = self.resources.snapshot()
        instances = validate_requests(self.settings, items, self._capabilities(snapshot))
        try:
            current = self.desired.read().by_name()
        except StateError:
            current = {}
        # Ports of every unit file on the host are ours (containers still stopping, the profiled instance):
        # the update's pass stops them before it starts anything.
        ours = [port for ports in published_ports(self.settings, list(current.values())).values() for port in ports]
        ours += [port for unit in self.reconciler.units.existing().values() for port in ports_in_unit_file(unit.text)]
        clashes = port_conflicts(published_ports(self.settings, instances), host_listeners(), ours)
        kept = []
        for instance in instances:
            old = current.get(instance.name)
            same = old is not None and (old.service, old.variety, old.profile) == (
                instance.service, instance.variety, instance.profile)
            kept.append(instance.model_copy(update={"devices": old.devices}) if same and old else instance)
        lookup = self._footprint_lookup()
        placed = place(self.settings, kept, snapshot, lookup)
        fit = self._assess(placed, snapshot, lookup)
        placed = [i.model_copy(update={"exclusive_with": fit.exclusive_with.get(i.name, ())}) for i in placed]
        return placed, fit, snapshot, clashes

    def _assess(self, instances: list[DesiredInstance], snapshot: HostSnapshot, lookup: Any = None) -> Fit:
        return assess(self.settings, instances, snapshot, lookup if lookup is not None else self._footprint_lookup(),
                      self.admission.reserve_memory_gb)

    def _footprint_lookup(self) -> FootprintLookup:
        """Measured footprints (fresh profiling results plus the margin) for instances that declare none."""
        return footprint_lookup(self.settings, self._profile_results(), self.profiling.margin)

    def _profile_results(self) -> list[ProfileResult]:
        if self.results is None:
            return []
        try:
            return self.results.all()
        except StateError:  # a damaged file: admission and the settings view go without measurements
            return []

    def _result_json(self, result: ProfileResult) -> dict[str, Any]:
        try:
            current = resolve(self.settings, result.service, result.variety, result.profile).spec_hash
        except ResolveError:
            current = None
        return result_json(result, current)

    def update(self, items: list[ServiceRequest], force: bool = False) -> DesiredSet:
        instances, fit, _, clashes = self._admit(items)
        if clashes:  # certain, unlike an estimate: force does not override it
            raise AdmissionError({
                "message": "the desired set publishes a host port twice or one already in use: "
                           + "; ".join(c.describe() for c in clashes) + " (force=true does not override this)",
                "conflicts": [c.detail() for c in clashes],
            })
        if fit.conflicts and not force:
            raise AdmissionError({
                "message": "the desired set does not fit this host: "
                           + "; ".join(c.describe() for c in fit.conflicts) + " (force=true admits it anyway)",
                "conflicts": [c.detail() for c in fit.conflicts],
            })
        if fit.conflicts:
            log.warning("admitting a desired set that does not fit (force): %s",
                        "; ".join(c.describe() for c in fit.conflicts))
        try:
            desired = self.desired.replace(instances)
        except StateError as exc:
            raise CoreUnavailable(f"the desired set was not changed: {exc}") from exc
        self.observer.desired_changed(desired.generation)
        self.reconciler.wake(desired.generation)
        if self.profiler is not None:
            self.profiler.wake()
        return desired

    def wake(self, name: str) -> NudgeAccepted:
        return self._nudge(name, "wake")

    def sleep(self, name: str) -> NudgeAccepted:
        return self._nudge(name, "sleep")

    def _nudge(self, name: str, operation: NudgeOperation) -> NudgeAccepted:
        try:
            desired = self.desired.read()
        except StateError as exc:
            raise CoreUnavailable(f"the desired set cannot be read: {exc}") from exc
        message = check_nudge(self.settings, desired, name, operation)
        if operation == "wake":
            check_listening(name, self._status_of(name))
        self.reconciler.nudge(name, operation)
        return NudgeAccepted(message=message)

    def plan(self, items: list[ServiceRequest]) -> list[PlanEntry]:
        instances, fit, snapshot, clashes = self._admit(items)
        entries = self.reconciler.preview(DesiredSet(instances=tuple(instances)))
        planned = {entry.name for entry in entries}
        for instance in instances:
            if instance.name not in planned:
                entries.append(PlanEntry(name=instance.name, action="keep", reason="keep: a resource, not a container",
                                         service=instance.service, variety=instance.variety, profile=instance.profile))
        by_name = {i.name: i for i in instances}
        annotated = []
        for entry in entries:
            wanted = by_name.get(entry.name)
            if wanted is None:
                annotated.append(entry)
                continue
            instance = wanted
            details: dict[str, Any] = {"gpus": fit.for_instance(entry.name, snapshot)}
            if instance.devices is not None:
                details["devices"] = list(instance.devices)
            if instance.variety_auto:
                details["variety"] = f"{instance.variety}: picked for this host"
            if entry.name in fit.footprints:
                details["footprint"] = fit.footprints[entry.name]
            if entry.name in fit.on_demand:
                details["exclusive_with"] = list(instance.exclusive_with)
            conflicts = [c.describe() for c in fit.conflicts if entry.name in c.instances]
            if conflicts:
                details["does_not_fit"] = conflicts
            ports = [c.describe() for c in clashes if entry.name in c.instances]
            if ports:
                details["port_conflicts"] = ports
            annotated.append(entry.model_copy(update={"fit": details}))
        return annotated

    def _reservations(self, snapshot: HostSnapshot) -> dict[str, float]:
        """Declared needs of instances still starting: measured usage does not include them yet."""
        starting = {s.name for s in self.active_services() if s.status == "starting"}
        if not starting:
            return {}
        try:
            desired = [i for i in self.desired.read().instances if i.name in starting]
        except StateError:
            return {}
        return reservations(self._assess(desired, snapshot))

    def metrics(self) -> Iterable[Metric]:
        """GET /metrics: the families of `ozwald.provisioner.metrics`, from what is in memory now, plus the
        desired generation, the profiling results and a resource snapshot."""
        from ozwald.provisioner.metrics import Footprint, ScrapeInputs, families, newest_footprints

        with self._lock:
            published = self._published
        generation: int | None = self.desired.read().generation  # from memory: the state file is the truth
        snapshot = self.resources.snapshot()
        results = self._profile_results()
        footprints = []
        for result in newest_footprints(results):
            try:
                current: str | None = resolve(self.settings, result.service, result.variety, result.profile).spec_hash
            except ResolveError:
                current = None
            footprints.append(Footprint(result, result.spec_hash == current))
        report = getattr(self.reconciler, "last_report", None)  # the reconciler's public numbers only
        passes = getattr(self.reconciler, "passes", None)
        return families(ScrapeInputs(
            statuses=published or [], observed=self.observer.snapshot(),
            passes=passes if isinstance(passes, int) else None,
            last_pass_seconds=getattr(report, "seconds", None), desired_generation=generation,
            gpus=snapshot.gpus, reserved_vram_mib=self._reserved_vram(snapshot, generation, results),
            footprints=footprints))

    def _reserved_vram(self, snapshot: HostSnapshot, generation: int | None,
                       results: list[ProfileResult]) -> dict[str, float]:
        """MiB per GPU that admission counts the desired instances as needing (declared, else measured). Kept
        while the desired set, the settings, the GPUs and the results are the same: 100 instances take ~10 ms."""
        if not snapshot.gpus:
            return {}
        key = (generation, id(self.settings), tuple((g.id, g.uuid, g.vram_total_mib) for g in snapshot.gpus),
               tuple((r.key, r.finished_at) for r in results))
        cached = self._reserved
        if cached is not None and cached[0] == key:
            return cached[1]
        instances = self.desired.read().instances
        fit = self._assess(list(instances), snapshot)
        reserved = {gpu_id: float(sum(users.values())) for gpu_id, users in fit.vram_mib.items()}
        self._reserved = (key, reserved)
        return reserved

    def host_resources(self) -> dict[str, Any]:
        snapshot = self.resources.snapshot()
        return dict(host_resources_view(snapshot, self._reservations(snapshot)))

    def available_resources(self) -> list[dict[str, Any]]:
        snapshot = self.resources.snapshot()
        return [dict(r) for r in available_resources_view(snapshot, self._reservations(snapshot))]

    def profile_requests(self) -> list[dict[str, Any]]:
        return self.profiles.list()

    def _profile_changed(self) -> None:
        with self._changed:
            self._profile_revision += 1
            self._changed.notify_all()

    def watch_profile(self, after: int | None, wait: float) -> tuple[int, list[dict[str, Any]]]:
        with self._changed:
            if after is not None and after == self._profile_revision and wait > 0:
                self._changed.wait_for(lambda: self._profile_revision != after, wait)
            revision = self._profile_revision
        return revision, self.profile_requests()

    def profile_results(self) -> list[dict[str, Any]]:
        return [self._result_json(r) for r in self.results.all()] if self.results is not None else []

    def enqueue_profile(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise UpdateError(None, "body", "a profiling request is a JSON object")
        items = profile_items(self.settings, body, self._host_capabilities())
        try:
            request_id = self.profiles.enqueue_many(items)
        except QueueFull:
            raise
        except StateError as exc:
            raise CoreUnavailable(f"nothing was queued: {exc}") from exc
        self._profile_changed()
        if self.profiler is not None:
            self.profiler.wake()
        return {"status": "accepted", "request_id": request_id,
                "items": [item.model_dump(mode="json") for item in items]}

    def health(self) -> dict[str, str]:
        components: dict[str, str] = {}
        components["cache"] = "ok" if self.statuses.reachable() else "unreachable"
        try:
            self.systemd.unit_state("ozwald.service")
            components["systemd"] = "ok"
        except Exception:  # any failure to talk to systemd makes the provisioner unhealthy
            components["systemd"] = "unreachable"
        components["reconciler"] = "ok" if self.reconciler.alive else "stopped"
        return components

