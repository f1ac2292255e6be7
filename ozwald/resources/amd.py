# SPDX-License-Identifier: AGPL-3.0-or-later
"""AMD GPUs through AMD SMI (the `amdsmi` Python package shipped with ROCm and on PyPI).

Failure modes handled, as the binding really produces them:
- package not installed: ImportError (permanent for this process);
- package installed without ROCm: amdsmi 7.0.x raises KeyError('libamd_smi.so') while importing
  its ctypes wrapper, older releases an OSError from ctypes; neither is an ImportError;
- amdgpu driver missing or no permission: amdsmi_init raises AmdSmiLibraryException;
- a device failing later: any `amdsmi.AmdSmiException` (library, retry, timeout, parameter).
Fields a device does not implement come back as the string "N/A" and are reported as unknown.

Indices follow the PCI address order, because the ROCm container toolkit numbers
`amd.com/gpu=N` by its sorted glob of amdgpu PCI devices; amdsmi's own handle order is usually the
same, but is not documented to be. If any address is unknown the handle order is used instead.
Units (checked against amdsmi_interface.py): amdsmi_get_gpu_vram_usage reports MB,
amdsmi_get_gpu_memory_total/usage and per-process `vram_mem` report bytes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import ClassVar, Unpack

from ozwald.resources._failures import describe
from ozwald.resources.backend import (
    BackendOptions,
    Unavailable,
    VendorBackend,
    call,
    int_or_none,
    text_or_none,
)
from ozwald.resources.models import MIB, GpuInfo, GpuProcess, Vendor
from ozwald.resources.pci import normalize_bus_id


def load_amdsmi() -> ModuleType:
    """The only place amdsmi is imported, so tests can substitute it through sys.modules."""
    return importlib.import_module("amdsmi")


@dataclass(slots=True)
class _Device:
    """A processor handle plus the identity fields, which stay fixed while the library is open."""

    handle: object
    index: int = 0
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_description: str | None = None
    pending: set[str] = field(default_factory=lambda: {"name", "uuid", "pci_bus_id"})


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


class AmdBackend(VendorBackend):
    """AMD SMI session kept open for the life of the provisioner; see the module docstring."""

    vendor: ClassVar[Vendor] = "amd"
    binding: ClassVar[str] = "amdsmi"
    install_hint: ClassVar[str] = "amdsmi is not installed (pip install 'ozwald[amd]')"
    error_base: ClassVar[str] = "AmdSmiException"
    default_loader = staticmethod(load_amdsmi)

    def __init__(self, loader: Callable[[], ModuleType] | None = None, **options: Unpack[BackendOptions]) -> None:
        super().__init__(loader, **options)
        self._devices: list[_Device] = []

    def _import_failure(self, exc: Exception) -> Unavailable:
        if isinstance(exc, KeyError | OSError):
            return Unavailable(
                f"amdsmi is installed but the ROCm library libamd_smi.so could not be loaded ({describe(exc)})",
                permanent=True,
                absent=True,
            )
        raise exc

    def _start_library(self, module: ModuleType) -> None:
        flags = getattr(module, "AmdSmiInitFlags", None)
        try:
            if flags is not None:
                module.amdsmi_init(flags.INIT_AMD_GPUS)
            else:
                module.amdsmi_init()
        except self._error as exc:
            raise Unavailable(
                f"amdsmi_init failed ({describe(exc)}); is the amdgpu driver loaded and /dev/kfd accessible?"
            ) from exc

    def _enumerate(self, module: ModuleType) -> None:
        try:
            handles = list(module.amdsmi_get_processor_handles())
        except self._error as exc:
            raise Unavailable(f"amdsmi could not list GPUs: {describe(exc)}") from exc
        if not handles:
            raise Unavailable("no AMD GPUs found", absent=True)
        devices = [_Device(handle) for handle in handles]
        for position, device in enumerate(devices):
            self._read_identity(module, device, f"amd handle {position}", [])
        addresses = [device.pci_bus_id for device in devices]
        if all(addresses) and len(set(addresses)) == len(addresses):
            devices.sort(key=lambda device: device.pci_bus_id or "")
        for index, device in enumerate(devices):
            device.index = index
        self._devices = devices
        driver = self.attempt(
            "amd", "driver_version", partial(call, module, "amdsmi_get_gpu_driver_info", devices[0].handle), []
        )
        self._driver_version = text_or_none(_mapping(driver).get("driver_version"))

    def _read_identity(self, module: ModuleType, device: _Device, key: str, errors: list[str]) -> None:
        """Ask for whichever identity fields have not answered yet; failures are retried next read."""
        handle, pending = device.handle, device.pending
        if not pending:
            return
        bdf = self.attempt_identity(
            key, "pci_bus_id", partial(call, module, "amdsmi_get_gpu_device_bdf", handle), errors, pending
        )
        bus_id = text_or_none(bdf)
        if bus_id is not None:
            device.pci_bus_id = normalize_bus_id(bus_id)
            device.pci_description = self.pci_description(device.pci_bus_id)
        uuid = self.attempt_identity(
            key, "uuid", partial(call, module, "amdsmi_get_gpu_device_uuid", handle), errors, pending
        )
        device.uuid = text_or_none(uuid) or device.uuid
        asic = self.attempt_identity(
            key, "name", partial(call, module, "amdsmi_get_gpu_asic_info", handle), errors, pending
        )
        device.name = text_or_none(_mapping(asic).get("market_name")) or device.name

    def _collect(self) -> tuple[GpuInfo, ...]:
        module = self._module
        assert module is not None  # _collect only runs after a successful _initialise
        return tuple(self._read_device(module, device) for device in self._devices)

    def _read_device(self, module: ModuleType, device: _Device) -> GpuInfo:
        key, handle = f"amd:{device.index}", device.handle
        errors: list[str] = []
        self._read_identity(module, device, key, errors)
        total, used = self._vram(module, key, handle, errors)
        activity = self.attempt(key, "utilization", partial(call, module, "amdsmi_get_gpu_activity", handle), errors)
        utilization = int_or_none(_mapping(activity).get("gfx_activity"))
        return GpuInfo(
            vendor="amd",
            index=device.index,
            uuid=device.uuid,
            name=device.name,
            pci_bus_id=device.pci_bus_id,
            pci_description=device.pci_description,
            vram_total_mib=total,
            vram_free_mib=None if total is None or used is None else max(0, total - used),
            vram_used_mib=used,
            utilization_percent=None if utilization is None else float(utilization),
            processes=self._processes(module, key, handle, errors),
            errors=tuple(errors),
        )

    def _vram(self, module: ModuleType, key: str, handle: object, errors: list[str]) -> tuple[int | None, int | None]:
        usage = _mapping(
            self.attempt(key, "memory", partial(call, module, "amdsmi_get_gpu_vram_usage", handle), errors)
        )
        total, used = int_or_none(usage.get("vram_total")), int_or_none(usage.get("vram_used"))  # MB
        if total is not None and used is not None:
            return total, used
        # Byte-exact counters, present in every amdsmi release; used when the MB summary is missing.
        memory_type = getattr(getattr(module, "AmdSmiMemoryType", None), "VRAM", None)
        if memory_type is None:
            return total, used
        total_bytes = int_or_none(
            self.attempt(
                key, "memory.total", partial(call, module, "amdsmi_get_gpu_memory_total", handle, memory_type), errors
            )
        )
        used_bytes = int_or_none(
            self.attempt(
                key, "memory.used", partial(call, module, "amdsmi_get_gpu_memory_usage", handle, memory_type), errors
            )
        )
        if total_bytes is None or used_bytes is None:
            return total, used
        errors[:] = [error for error in errors if not error.startswith("memory:")]
        return total_bytes // MIB, used_bytes // MIB

    def _processes(self, module: ModuleType, key: str, handle: object, errors: list[str]) -> tuple[GpuProcess, ...]:
        entries = self.attempt(key, "processes", partial(call, module, "amdsmi_get_gpu_process_list", handle), errors)
        processes: dict[int, int | None] = {}
        for entry in entries if isinstance(entries, list | tuple) else ():
            info: object = entry
            if not isinstance(entry, Mapping):
                # amdsmi < 6.1 returned process handles that need a second call each.
                info = self.attempt(
                    key, "processes", partial(call, module, "amdsmi_get_gpu_process_info", handle, entry), errors
                )
            details = _mapping(info)
            pid = int_or_none(details.get("pid"))
            if pid is None:
                continue
            vram = int_or_none(_mapping(details.get("memory_usage")).get("vram_mem"))
            if vram is None:
                vram = int_or_none(details.get("mem"))
            processes[pid] = None if vram is None else vram // MIB
        return tuple(GpuProcess(pid, mib) for pid, mib in sorted(processes.items()))

    def _shutdown(self) -> None:
        module = self._module
        self._devices = []
        if module is not None:
            module.amdsmi_shut_down()
