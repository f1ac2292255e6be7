"""The provisioner core behind the HTTP API: settings, desired state, statuses, resources, reconciler.

Reads are served from memory (statuses the reconciler last published, a resource snapshot), so the
polled endpoints never wait on systemd. Writes go to the desired-state store, which wakes the
reconciler in this process at once and, through Redis, in any other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ozwald.config import Settings
from ozwald.config.secrets import public_service
from ozwald.provisioner.admission import Fit, assess, place, reservations
from ozwald.provisioner.ports import (
    PortConflict,
    host_listeners,
    port_conflicts,
    ports_in_unit_file,
    published_ports,
)
from ozwald.provisioner.reconciler import Reconciler
from ozwald.provisioner.requests import HostCapabilities, validate_requests
from ozwald.records import (
    ActiveService,
    AdmissionError,
    CoreUnavailable,
    DesiredInstance,
    DesiredSet,
    PlanEntry,
    ServiceRequest,
    UpdateError,
)
from ozwald.resources import HostResourceMonitor, HostSnapshot, available_resources_view, host_resources_view
from ozwald.resources.cdi import cdi_device_names
from ozwald.state import (
    DesiredStateStore,
    ProfileQueue,
    StateError,
    StateUnavailable,
    StatusCache,
)
from ozwald.systemd import SystemdClient

log = logging.getLogger(__name__)


class Provisioner:
    """Implements `ozwald.api.core.ProvisionerCore`; thread-safe."""

    def __init__(self, settings: Settings, desired: DesiredStateStore, statuses: StatusCache, profiles: ProfileQueue,
                 resources: HostResourceMonitor, systemd: SystemdClient, reconciler_factory: Any) -> None:
        self.settings = settings
        self.desired = desired
        self.statuses = statuses
        self.profiles = profiles
        self.resources = resources
        self.systemd = systemd
        self._published: list[ActiveService] | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Milliseconds since the epoch at start-up, then +1 per change: a revision from before a restart of
        # the provisioner is always lower than any of the new process's, so no client waits on a stale one.
        self._revision = time.time_ns() // 1_000_000
        self.reconciler: Reconciler = reconciler_factory(self._read_desired, self._publish)
        self._remove_listener = self.desired.add_listener(lambda d: self.reconciler.wake(d.generation))
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # Life cycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        self.resources.start()
        self.reconciler.start()
        self._watcher = threading.Thread(target=self._watch_other_writers, name="ozwald-desired-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._remove_listener()
        self.reconciler.stop()
        self.resources.stop()

    def replace_settings(self, settings: Settings) -> None:
        """Settings re-read from the file (`systemctl reload ozwald`); the caller has validated them."""
        self.settings = settings
        self.profiles.settings = settings
        self.reconciler.replace_settings(settings)

    def _watch_other_writers(self) -> None:
        """Updates written by another process reach this reconciler through Redis pub/sub. This process's own
        updates arrive here too; the reconciler drops a wake-up for a generation it already has."""
        with self.desired.subscribe() as listener:
            while not self._stop.is_set():
                generation = listener.wait(1.0)
                if generation is not None:
                    self.reconciler.wake(generation)

    def _read_desired(self) -> DesiredSet:
        try:
            return self.desired.read()
        except StateUnavailable:
            local = self.desired.read_local()
            log.warning("cache unreachable: reconciling against the local copy of the desired set")
            return local or DesiredSet()

    def _publish(self, services: list[ActiveService]) -> None:
        with self._changed:
            if services != self._published:
                self._published = services
                self._revision += 1
                self._changed.notify_all()
        try:
            self.statuses.replace_all({s.name: s for s in services})
        except StateError as exc:
            log.warning("could not cache statuses: %s", exc)

    # ProvisionerCore ---------------------------------------------------------------------------------

    def configured_services(self) -> list[dict[str, Any]]:
        return [public_service(service) for service in self.settings.services]

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
        ours = [port for ports in published_ports(self.settings, list(current.values())).values() for port in ports]
        ours += [port for unit in self.reconciler.units.existing().values() for port in ports_in_unit_file(unit.text)]
        clashes = port_conflicts(published_ports(self.settings, instances), host_listeners(), ours)
        kept = []
        for instance in instances:
            old = current.get(instance.name)
            same = old is not None and (old.service, old.variety, old.profile) == (
                instance.service, instance.variety, instance.profile)
            kept.append(instance.model_copy(update={"devices": old.devices}) if same and old else instance)
        placed = place(self.settings, kept, snapshot)
        return placed, assess(self.settings, placed, snapshot), snapshot, clashes

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
            return self.desired.replace(instances)
        except StateUnavailable as exc:
            raise CoreUnavailable("cache unavailable: the desired set was not changed") from exc

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
        return reservations(assess(self.settings, desired, snapshot))

    def host_resources(self) -> dict[str, Any]:
        snapshot = self.resources.snapshot()
        return dict(host_resources_view(snapshot, self._reservations(snapshot)))

    def available_resources(self) -> list[dict[str, Any]]:
        snapshot = self.resources.snapshot()
        return [dict(r) for r in available_resources_view(snapshot, self._reservations(snapshot))]

    def profile_requests(self) -> list[dict[str, Any]]:
        try:
            return self.profiles.list()
        except StateUnavailable as exc:
            raise CoreUnavailable("cache unavailable") from exc

    def enqueue_profile(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise UpdateError(None, "body", "a profiling request is a JSON object")
        try:
            request_id = self.profiles.enqueue(body)
        except StateUnavailable as exc:
            raise CoreUnavailable("cache unavailable") from exc
        return {"status": "accepted", "request_id": request_id}

    def health(self) -> dict[str, str]:
        components: dict[str, str] = {}
        try:
            self.desired.generation()
            components["cache"] = "ok"
        except StateError:
            components["cache"] = "unreachable"
        try:
            self.systemd.unit_state("ozwald.service")
            components["systemd"] = "ok"
        except Exception:  # any failure to talk to systemd makes the provisioner unhealthy
            components["systemd"] = "unreachable"
        components["reconciler"] = "ok" if self.reconciler.alive else "stopped"
        return components
