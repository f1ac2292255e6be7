# SPDX-License-Identifier: AGPL-3.0-or-later
"""Validate an orchestrator's desired set against the settings, all or nothing.

Every problem is reported with the item's index and field; nothing is stored unless all items pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from ozwald.config import EffectiveSpec, ResolveError, Settings, resolve
from ozwald.config.model import Service
from ozwald.quadlet.naming import RESERVED_INSTANCES, unit_name
from ozwald.records import DesiredInstance, ServiceRequest, UpdateError, check_unique_names

# Which GPU vendor a CDI device name needs; anything else (or no device) runs on any host.
CDI_VENDORS = {"nvidia.com/": "nvidia", "amd.com/": "amd"}


def effective_spec(settings: Settings, instance: DesiredInstance) -> EffectiveSpec:
    """The instance's spec, with the GPU pin admission chose (if any) in place of the configured devices; a
    profiled instance is measured from its container's own start, so never on demand."""
    spec = resolve(settings, instance.service, instance.variety, instance.profile)
    if instance.devices is not None:
        spec = replace(spec, devices=instance.devices)
    if instance.profiled and spec.on_demand is not None:
        spec = replace(spec, on_demand=None)
    return spec


def required_vendors(settings: Settings, service: Service, variety: str | None) -> set[str]:
    """GPU vendors a variety needs, read from its effective devices (CDI names)."""
    spec = resolve(settings, service.name, variety)
    needs = set()
    for device in spec.devices:
        for prefix, vendor in CDI_VENDORS.items():
            if device.startswith(prefix):
                needs.add(vendor)
    return needs


@dataclass(frozen=True)
class HostCapabilities:
    """What a variety's devices need from the host: GPUs of the vendor, and a way to hand them over.

    `cdi_names` is None when CDI specs are not consulted (then GPUs alone decide).
    """

    gpu_vendors: frozenset[str] = frozenset()
    cdi_names: frozenset[str] | None = None
    has_kfd: bool = False

    def can_run(self, settings: Settings, service: Service, variety: str | None) -> tuple[bool, str]:
        spec = resolve(settings, service.name, variety)
        for device in spec.devices:
            vendor = next((v for p, v in CDI_VENDORS.items() if device.startswith(p)), None)
            if vendor is None:
                continue
            if vendor not in self.gpu_vendors:
                return False, f"no {vendor} GPU on this host"
            if self.cdi_names is None or device in self.cdi_names:
                continue
            if vendor == "amd" and self.has_kfd:
                continue
            return False, f"no CDI spec provides {device}"
        return True, "its devices are available"


def pick_variety(settings: Settings, service: Service, host: HostCapabilities | Collection[str]
                 ) -> tuple[str | None, str]:
    """The first variety, in the service's order, this host can run, and why.

    With nvidia/amdgpu/cpu-only varieties this gives nvidia on NVIDIA hosts with a CDI spec, amdgpu on
    AMD hosts (CDI spec or /dev/kfd), and cpu-only elsewhere; a variety without GPU devices always fits.
    """
    if not isinstance(host, HostCapabilities):
        host = HostCapabilities(gpu_vendors=frozenset(host))
    if not service.varieties:
        return None, ""
    skipped: list[str] = []
    for name in service.varieties:
        ok, why = host.can_run(settings, service, name)
        if ok:
            note = f"; skipped {'; '.join(skipped)}" if skipped else ""
            return name, f"first variety this host can run{note}"
        skipped.append(f"{name} ({why})")
    return None, "; ".join(skipped)


def validate_requests(settings: Settings, items: Sequence[ServiceRequest],
                      host: HostCapabilities | Collection[str] = ()) -> list[DesiredInstance]:
    """Resolve every item or raise UpdateError for the first bad one (by index and field)."""
    check_unique_names(items)
    desired: list[DesiredInstance] = []
    for index, item in enumerate(items):
        if item.name in RESERVED_INSTANCES:
            raise UpdateError(index, "name", f"instance name {item.name!r} is reserved: {unit_name(item.name)} "
                                             "is Ozwald's own unit; name the instance differently")
        service_name = item.service or item.name
        service = settings.service(service_name)
        if service is None:
            known = ", ".join(s.name for s in settings.services) or "none"
            field = "service" if item.service else "name"
            raise UpdateError(index, field, f"unknown service {service_name!r} (configured: {known})")
        variety = item.variety
        auto = False
        if variety is None and service.varieties:
            variety, why = pick_variety(settings, service, host)
            auto = True
            if variety is None:
                raise UpdateError(index, "variety", f"no variety of {service.name!r} can run on this host: {why}")
        try:
            resolve(settings, service.name, variety, item.profile)
        except ResolveError as exc:
            raise UpdateError(index, exc.field, exc.message) from None
        desired.append(DesiredInstance(name=item.name, service=service.name, variety=variety, profile=item.profile,
                                       variety_auto=auto))
    return desired
