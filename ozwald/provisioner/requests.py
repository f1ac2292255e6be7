"""Validate an orchestrator's desired set against the settings, all or nothing.

Every problem is reported with the item's index and field; nothing is stored unless all items pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ozwald.config import ResolveError, Settings, resolve
from ozwald.config.model import Service
from ozwald.provisioner.models import DesiredInstance, ServiceRequest, UpdateError

# Which GPU vendor a CDI device name needs; anything else (or no device) runs on any host.
CDI_VENDORS = {"nvidia.com/": "nvidia", "amd.com/": "amd"}


def required_vendors(settings: Settings, service: Service, variety: str | None) -> set[str]:
    """GPU vendors a variety needs, read from its effective devices (CDI names)."""
    spec = resolve(settings, service.name, variety)
    needs = set()
    for device in spec.devices:
        for prefix, vendor in CDI_VENDORS.items():
            if device.startswith(prefix):
                needs.add(vendor)
    return needs


def pick_variety(settings: Settings, service: Service, gpu_vendors: Collection[str]) -> str | None:
    """The first variety, in the service's order, whose devices this host can provide.

    With nvidia/amdgpu/cpu-only varieties this gives nvidia on NVIDIA hosts, amdgpu on AMD hosts and
    cpu-only elsewhere; a variety without GPU devices always fits.
    """
    if not service.varieties:
        return None
    for name in service.varieties:
        if required_vendors(settings, service, name) <= set(gpu_vendors):
            return name
    return None


def validate_requests(settings: Settings, items: Sequence[ServiceRequest], gpu_vendors: Collection[str] = ()
                      ) -> list[DesiredInstance]:
    """Resolve every item or raise UpdateError for the first bad one (by index and field)."""
    seen: dict[str, int] = {}
    desired: list[DesiredInstance] = []
    for index, item in enumerate(items):
        if item.name in seen:
            raise UpdateError(index, "name", f"duplicate instance name {item.name!r} (also item {seen[item.name]})")
        seen[item.name] = index
        service_name = item.service or item.name
        service = settings.service(service_name)
        if service is None:
            known = ", ".join(s.name for s in settings.services) or "none"
            field = "service" if item.service else "name"
            raise UpdateError(index, field, f"unknown service {service_name!r} (configured: {known})")
        variety = item.variety
        auto = False
        if variety is None and service.varieties:
            variety = pick_variety(settings, service, gpu_vendors)
            auto = True
            if variety is None:
                raise UpdateError(index, "variety", f"no variety of {service.name!r} can run on this host "
                                                    f"(varieties: {', '.join(service.varieties)})")
        try:
            resolve(settings, service.name, variety, item.profile)
        except ResolveError as exc:
            raise UpdateError(index, exc.field, exc.message) from None
        desired.append(DesiredInstance(name=item.name, service=service.name, variety=variety, profile=item.profile,
                                       variety_auto=auto))
    return desired
