# SPDX-License-Identifier: Apache-2.0
"""The JSON shapes of `/srv/host/resources` and `/srv/resources/available/` (see contract.md).

Field names are the predecessor's, kept exactly so existing orchestrators keep working; new fields
are only ever added. VRAM is in MiB and RAM in GB (GiB-based: bytes / 1024**3), as before.

Both views take optional `reservations`: resource name -> amount in that resource's unit
(cores, GB, MiB, or GPUs for the whole-device resource). They are subtracted from what was
measured, never below zero. Which amounts to pass is admission's policy, not this module's;
measured usage already includes what running services allocated, so the usual input is what
services have declared but not yet allocated (for example those still starting).
Resource names: `cpu`, `memory`, the GPU id (`nvidia:0`) and `vram:<GPU id>` (`vram:nvidia:0`);
use `gpu_resource_name` / `vram_resource_name` rather than formatting them by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal, TypedDict

from ozwald.resources.models import GpuInfo, HostSnapshot

log = logging.getLogger(__name__)

CPU_RESOURCE = "cpu"
MEMORY_RESOURCE = "memory"

Reservations = Mapping[str, float]
ResourceType = Literal["cpu", "memory", "gpu", "vram"]


def gpu_resource_name(gpu_id: str) -> str:
    return gpu_id


def vram_resource_name(gpu_id: str) -> str:
    return f"vram:{gpu_id}"


class VendorSummary(TypedDict):
    available: bool
    reason: str | None
    driver_version: str | None


class GpuSummary(TypedDict):
    id: str
    total_vram: int
    available_vram: int
    description: str
    pci_device_description: str
    # additions over the predecessor's shape
    vendor: str
    index: int
    uuid: str | None
    cdi_name: str
    cdi_uuid_name: str | None
    pci_bus_id: str | None
    utilization_percent: float | None
    errors: list[str]


class HostResources(TypedDict):
    total_cpu_cores: int
    available_cpu_cores: float
    total_ram_gb: float
    available_ram_gb: float
    total_vram_gb: float
    available_vram_gb: float
    total_gpus: int
    available_gpus: list[str]
    gpus: list[GpuSummary]
    # additions over the predecessor's shape
    cpu_load_percent: float | None
    vendors: dict[str, VendorSummary]


class AvailableResource(TypedDict):
    name: str
    type: ResourceType
    unit: str
    value: float
    related_resources: list[str]
    extended_attributes: dict[str, object]


def _gb(num_bytes: float) -> float:
    return round(num_bytes / 1024**3, 2)


class _Availability:
    """Measured availability minus reservations, computed once and shared by both views."""

    def __init__(self, snapshot: HostSnapshot, reservations: Reservations | None) -> None:
        reserved = dict(reservations or {})
        negative = {name: amount for name, amount in reserved.items() if amount < 0}
        if negative:
            raise ValueError(f"reservations must not be negative: {negative}")
        known = {CPU_RESOURCE, MEMORY_RESOURCE}
        for gpu in snapshot.gpus:
            known.update((gpu_resource_name(gpu.id), vram_resource_name(gpu.id)))
        unknown = sorted(set(reserved) - known)
        if unknown:  # e.g. a service holding a GPU that has since disappeared
            log.debug("reservations for resources not on this host: %s", unknown)
        self.cpu_cores = max(0.0, snapshot.cpu_cores_available - reserved.get(CPU_RESOURCE, 0.0))
        ram_bytes = snapshot.ram_available_bytes - reserved.get(MEMORY_RESOURCE, 0.0) * 1024**3
        self.ram_bytes = max(0.0, ram_bytes)
        self.vram_mib: dict[str, int] = {}
        self.gpu_units: dict[str, float] = {}
        for gpu in snapshot.gpus:
            free = gpu.vram_free_mib if gpu.usable and gpu.vram_free_mib is not None else 0
            self.vram_mib[gpu.id] = max(0, int(free - reserved.get(vram_resource_name(gpu.id), 0.0)))
            whole = 1.0 if gpu.usable else 0.0
            self.gpu_units[gpu.id] = min(1.0, max(0.0, whole - reserved.get(gpu_resource_name(gpu.id), 0.0)))

    def gpu_available(self, gpu: GpuInfo) -> bool:
        return self.gpu_units[gpu.id] > 0


def _gpu_summary(gpu: GpuInfo, availability: _Availability) -> GpuSummary:
    return {
        "id": gpu.id,
        "total_vram": gpu.vram_total_mib or 0,
        "available_vram": availability.vram_mib[gpu.id],
        "description": gpu.name or f"{gpu.vendor.upper()} GPU {gpu.index}",
        "pci_device_description": gpu.pci_description or gpu.pci_bus_id or "",
        "vendor": gpu.vendor,
        "index": gpu.index,
        "uuid": gpu.uuid,
        "cdi_name": gpu.cdi_name,
        "cdi_uuid_name": gpu.cdi_uuid_name,
        "pci_bus_id": gpu.pci_bus_id,
        "utilization_percent": gpu.utilization_percent,
        "errors": list(gpu.errors),
    }


def host_resources_view(snapshot: HostSnapshot, reservations: Reservations | None = None) -> HostResources:
    """The `/srv/host/resources` body."""
    availability = _Availability(snapshot, reservations)
    total_vram_mib = sum(gpu.vram_total_mib or 0 for gpu in snapshot.gpus)
    available_vram_mib = sum(availability.vram_mib.values())
    return {
        "total_cpu_cores": snapshot.cpu_cores_total,
        "available_cpu_cores": round(availability.cpu_cores, 2),
        "total_ram_gb": _gb(snapshot.ram_total_bytes),
        "available_ram_gb": _gb(availability.ram_bytes),
        "total_vram_gb": round(total_vram_mib / 1024, 2),
        "available_vram_gb": round(available_vram_mib / 1024, 2),
        "total_gpus": len(snapshot.gpus),
        "available_gpus": [gpu.id for gpu in snapshot.gpus if availability.gpu_available(gpu)],
        "gpus": [_gpu_summary(gpu, availability) for gpu in snapshot.gpus],
        "cpu_load_percent": snapshot.cpu_load_percent,
        "vendors": {
            status.vendor: {
                "available": status.available,
                "reason": status.reason,
                "driver_version": status.driver_version,
            }
            for status in snapshot.vendors
        },
    }


def available_resources_view(
    snapshot: HostSnapshot, reservations: Reservations | None = None
) -> list[AvailableResource]:
    """The `/srv/resources/available/` body: one entry per schedulable quantity."""
    availability = _Availability(snapshot, reservations)
    resources: list[AvailableResource] = [
        {
            "name": CPU_RESOURCE,
            "type": "cpu",
            "unit": "cores",
            "value": round(availability.cpu_cores, 2),
            "related_resources": [],
            "extended_attributes": {
                "total": snapshot.cpu_cores_total,
                "load_percent": snapshot.cpu_load_percent,
            },
        },
        {
            "name": MEMORY_RESOURCE,
            "type": "memory",
            "unit": "GB",
            "value": _gb(availability.ram_bytes),
            "related_resources": [],
            "extended_attributes": {"total": _gb(snapshot.ram_total_bytes)},
        },
    ]
    for gpu in snapshot.gpus:
        gpu_name, vram_name = gpu_resource_name(gpu.id), vram_resource_name(gpu.id)
        resources.append(
            {
                "name": gpu_name,
                "type": "gpu",
                "unit": "devices",
                "value": availability.gpu_units[gpu.id],
                "related_resources": [vram_name],
                "extended_attributes": {
                    "vendor": gpu.vendor,
                    "index": gpu.index,
                    "uuid": gpu.uuid,
                    "description": gpu.name,
                    "pci_bus_id": gpu.pci_bus_id,
                    "pci_device_description": gpu.pci_description,
                    "cdi_name": gpu.cdi_name,
                    "cdi_uuid_name": gpu.cdi_uuid_name,
                    "utilization_percent": gpu.utilization_percent,
                    "processes": [
                        {"pid": process.pid, "used_vram_mib": process.used_vram_mib} for process in gpu.processes
                    ],
                    "errors": list(gpu.errors),
                },
            }
        )
        resources.append(
            {
                "name": vram_name,
                "type": "vram",
                "unit": "MiB",
                "value": availability.vram_mib[gpu.id],
                "related_resources": [gpu_name],
                "extended_attributes": {
                    "total": gpu.vram_total_mib,
                    "used": gpu.vram_used_mib,
                    "free": gpu.vram_free_mib,
                },
            }
        )
    return resources
