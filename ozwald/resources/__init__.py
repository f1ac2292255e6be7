# SPDX-License-Identifier: AGPL-3.0-or-later
"""Host resources: CPU, RAM and NVIDIA/AMD GPUs, detected without ever taking the provisioner down.

Create one `HostResourceMonitor` at start-up (it owns the vendor library sessions and the CPU
sampler thread), call `snapshot()` per request, and render it with `host_resources_view` or
`available_resources_view`. Vendor libraries are optional: on a host without them the snapshot
simply has no GPUs and each vendor's status says why.
"""

from ozwald.resources.amd import AmdBackend, load_amdsmi
from ozwald.resources.backend import GpuBackend, VendorReading
from ozwald.resources.cdi import CdiDeviceName, gpus_for_cdi_device, gpus_for_cdi_devices, parse_cdi_device_name
from ozwald.resources.cpu import CpuLoadSampler
from ozwald.resources.host import HostResourceMonitor, default_backends
from ozwald.resources.models import (
    CDI_KINDS,
    VENDORS,
    GpuInfo,
    GpuProcess,
    HostSnapshot,
    Vendor,
    VendorStatus,
    gpu_id,
)
from ozwald.resources.nvidia import NvidiaBackend, load_pynvml
from ozwald.resources.pci import describe_pci_device, normalize_bus_id
from ozwald.resources.views import (
    CPU_RESOURCE,
    MEMORY_RESOURCE,
    AvailableResource,
    GpuSummary,
    HostResources,
    Reservations,
    available_resources_view,
    gpu_resource_name,
    host_resources_view,
    vram_resource_name,
)

__all__ = [
    "CDI_KINDS",
    "CPU_RESOURCE",
    "MEMORY_RESOURCE",
    "VENDORS",
    "AmdBackend",
    "AvailableResource",
    "CdiDeviceName",
    "CpuLoadSampler",
    "GpuBackend",
    "GpuInfo",
    "GpuProcess",
    "GpuSummary",
    "HostResourceMonitor",
    "HostResources",
    "HostSnapshot",
    "NvidiaBackend",
    "Reservations",
    "Vendor",
    "VendorReading",
    "VendorStatus",
    "available_resources_view",
    "default_backends",
    "describe_pci_device",
    "gpu_id",
    "gpu_resource_name",
    "gpus_for_cdi_device",
    "gpus_for_cdi_devices",
    "host_resources_view",
    "load_amdsmi",
    "load_pynvml",
    "normalize_bus_id",
    "parse_cdi_device_name",
    "vram_resource_name",
]
