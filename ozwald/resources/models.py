# SPDX-License-Identifier: AGPL-3.0-or-later
"""Immutable records of what the host has, shared by the detectors, the HTTP views and admission.

Everything here is frozen so a snapshot can be handed to several request threads, cached, or
compared with a later one without anyone mutating it underneath. Values the hardware would not
report are `None` rather than 0: "unknown" and "none free" lead to different decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Vendor = Literal["nvidia", "amd"]
VENDORS: tuple[Vendor, ...] = ("nvidia", "amd")

# The CDI "kind" each vendor's container toolkit registers (nvidia-ctk, ROCm container-toolkit).
CDI_KINDS: dict[Vendor, str] = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}

MIB = 1024 * 1024
GIB = 1024 * 1024 * 1024


def gpu_id(vendor: Vendor, index: int) -> str:
    """The host-wide GPU id. Vendor indices restart at 0, so the vendor prefix keeps them apart."""
    return f"{vendor}:{index}"


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding GPU memory; `used_vram_mib` is None when the driver will not say (WDDM,
    containers without PID visibility, missing permissions)."""

    pid: int
    used_vram_mib: int | None = None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as seen at one moment.

    `index` is the vendor's own index, in the same numbering the vendor's CDI spec uses, so that
    `cdi_name` addresses this very device. `pci_bus_id` is normalised to the sysfs spelling
    ("0000:01:00.0") so addresses from both vendors compare equal. `errors` lists the fields that
    could not be read (one "field: reason" string each); a GPU with errors is still reported so an
    operator can see it.
    """

    vendor: Vendor
    index: int
    uuid: str | None = None
    name: str | None = None
    pci_bus_id: str | None = None
    pci_description: str | None = None
    vram_total_mib: int | None = None
    vram_free_mib: int | None = None
    vram_used_mib: int | None = None
    utilization_percent: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    errors: tuple[str, ...] = ()
    id: str = field(init=False)
    cdi_name: str = field(init=False)
    cdi_uuid_name: str | None = field(init=False)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"GPU index must be >= 0, got {self.index}")
        object.__setattr__(self, "id", gpu_id(self.vendor, self.index))
        object.__setattr__(self, "cdi_name", f"{CDI_KINDS[self.vendor]}={self.index}")
        # nvidia-ctk also names every device by UUID; the ROCm toolkit only emits index names and
        # "all", so an AMD UUID name would not resolve in podman and is not advertised.
        uuid_name = f"{CDI_KINDS['nvidia']}={self.uuid}" if self.vendor == "nvidia" and self.uuid else None
        object.__setattr__(self, "cdi_uuid_name", uuid_name)

    @property
    def cdi_names(self) -> tuple[str, ...]:
        """Every fully-qualified CDI name that selects exactly this GPU."""
        return (self.cdi_name,) if self.cdi_uuid_name is None else (self.cdi_name, self.cdi_uuid_name)

    @property
    def usable(self) -> bool:
        """Whether admission can reason about this GPU: without its VRAM numbers it cannot."""
        return self.vram_total_mib is not None and self.vram_free_mib is not None


@dataclass(frozen=True, slots=True)
class VendorStatus:
    """Whether a vendor's stack (Python binding, shared library, kernel driver, at least one GPU)
    works on this host. `reason` says why not, in words an operator can act on."""

    vendor: Vendor
    available: bool
    reason: str | None = None
    driver_version: str | None = None

    def __post_init__(self) -> None:
        if not self.available and not self.reason:
            raise ValueError(f"an unavailable vendor ({self.vendor}) needs a reason")


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """CPU, RAM and GPUs of the host at `taken_at` (seconds since the epoch).

    `cpu_load_percent` is None until the background sampler has completed its first interval; the
    available-cores estimate then assumes an idle host rather than blocking the caller to measure.
    """

    taken_at: float
    cpu_cores_total: int
    cpu_load_percent: float | None
    cpu_cores_available: float
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuInfo, ...] = ()
    vendors: tuple[VendorStatus, ...] = ()

    def __post_init__(self) -> None:
        ids = [gpu.id for gpu in self.gpus]
        if len(ids) != len(set(ids)):
            raise ValueError(f"GPU ids must be unique across vendors, got {ids}")

    @property
    def ram_total_gb(self) -> float:
        return self.ram_total_bytes / GIB

    @property
    def ram_available_gb(self) -> float:
        return self.ram_available_bytes / GIB

    def gpu(self, gpu_id: str) -> GpuInfo | None:
        return next((gpu for gpu in self.gpus if gpu.id == gpu_id), None)

    def vendor(self, vendor: Vendor) -> VendorStatus | None:
        return next((status for status in self.vendors if status.vendor == vendor), None)
