# SPDX-License-Identifier: AGPL-3.0-or-later
"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py).

Failure modes handled, as the binding really produces them:
- package not installed: `import pynvml` raises ImportError (permanent for this process);
- package installed, driver absent: nvmlInit raises NVMLError_LibraryNotFound
  (libnvidia-ml.so.1 missing) or NVMLError_DriverNotLoaded (kernel module not loaded);
- a device failing later (NVMLError_GpuIsLost, NVMLError_NotSupported, NVMLError_NoPermission):
  only the affected field of that GPU degrades.
All of these are subclasses of `pynvml.NVMLError`, which is what the queries catch.

Indices are NVML's enumeration order, which is also what `nvidia-ctk cdi generate` numbers
`nvidia.com/gpu=N` by, so `GpuInfo.cdi_name` selects the same card.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
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


def _iterable(value: object) -> Iterable[object]:
    return value if isinstance(value, list | tuple) else ()


def load_pynvml() -> ModuleType:
    """The only place pynvml is imported, so tests can substitute it through sys.modules."""
    return importlib.import_module("pynvml")


@dataclass(slots=True)
class _Device:
    """A device handle plus the identity fields, which cannot change while NVML stays initialised."""

    index: int
    handle: object | None
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_description: str | None = None
    open_errors: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=lambda: {"name", "uuid", "pci_bus_id"})


class NvidiaBackend(VendorBackend):
    """NVML session kept open for the life of the provisioner; see the module docstring."""

    vendor: ClassVar[Vendor] = "nvidia"
    binding: ClassVar[str] = "pynvml"
    install_hint: ClassVar[str] = "nvidia-ml-py is not installed (pip install 'ozwald[nvidia]')"
    error_base: ClassVar[str] = "NVMLError"
    default_loader = staticmethod(load_pynvml)

    def __init__(self, loader: Callable[[], ModuleType] | None = None, **options: Unpack[BackendOptions]) -> None:
        super().__init__(loader, **options)
        self._devices: list[_Device] = []

    def _is(self, module: ModuleType, exc: BaseException, class_name: str) -> bool:
        cls = getattr(module, class_name, None)
        return isinstance(cls, type) and isinstance(exc, cls)

    def _start_library(self, module: ModuleType) -> None:
        try:
            module.nvmlInit()
        except self._error as exc:
            if self._is(module, exc, "NVMLError_LibraryNotFound"):
                raise Unavailable(
                    "NVIDIA driver library libnvidia-ml.so.1 not found (no NVIDIA driver installed)",
                    absent=True,
                ) from exc
            if self._is(module, exc, "NVMLError_DriverNotLoaded"):
                raise Unavailable("NVIDIA kernel driver is not loaded (nvidia.ko)") from exc
            if self._is(module, exc, "NVMLError_NoPermission"):
                raise Unavailable("no permission to open the NVIDIA devices (/dev/nvidia*)") from exc
            raise Unavailable(f"nvmlInit failed: {describe(exc)}") from exc

    def _enumerate(self, module: ModuleType) -> None:
        errors: list[str] = []
        self._driver_version = text_or_none(
            self.attempt("nvidia", "driver_version", partial(call, module, "nvmlSystemGetDriverVersion"), errors)
        )
        try:
            count = int(module.nvmlDeviceGetCount())
        except self._error as exc:
            raise Unavailable(
                f"NVML could not count devices: {describe(exc)}", driver_version=self._driver_version
            ) from exc
        if count == 0:
            raise Unavailable("no NVIDIA GPUs found", absent=True, driver_version=self._driver_version)
        devices = []
        for index in range(count):
            device_errors: list[str] = []
            handle = self.attempt(
                f"nvidia:{index}", "handle", partial(call, module, "nvmlDeviceGetHandleByIndex", index), device_errors
            )
            device = _Device(index, handle, open_errors=device_errors)
            if handle is not None:
                self._read_identity(module, device, [])
            devices.append(device)
        self._devices = devices

    def _read_identity(self, module: ModuleType, device: _Device, errors: list[str]) -> None:
        """Ask for whichever identity fields have not answered yet; failures are retried next read."""
        key, handle, pending = f"nvidia:{device.index}", device.handle, device.pending
        if not pending:
            return
        name = self.attempt_identity(key, "name", partial(call, module, "nvmlDeviceGetName", handle), errors, pending)
        device.name = text_or_none(name) or device.name
        uuid = self.attempt_identity(key, "uuid", partial(call, module, "nvmlDeviceGetUUID", handle), errors, pending)
        device.uuid = text_or_none(uuid) or device.uuid
        pci = self.attempt_identity(
            key, "pci_bus_id", partial(call, module, "nvmlDeviceGetPciInfo", handle), errors, pending
        )
        bus_id = text_or_none(getattr(pci, "busId", None))
        if bus_id is not None:
            device.pci_bus_id = normalize_bus_id(bus_id)
            device.pci_description = self.pci_description(device.pci_bus_id)

    def _collect(self) -> tuple[GpuInfo, ...]:
        module = self._module
        assert module is not None  # _collect only runs after a successful _initialise
        return tuple(self._read_device(module, device) for device in self._devices)

    def _read_device(self, module: ModuleType, device: _Device) -> GpuInfo:
        if device.handle is None:
            return GpuInfo("nvidia", device.index, errors=tuple(device.open_errors))
        key, handle = f"nvidia:{device.index}", device.handle
        errors: list[str] = []
        self._read_identity(module, device, errors)
        memory = self.attempt(key, "memory", partial(call, module, "nvmlDeviceGetMemoryInfo", handle), errors)
        total = free = used = None
        if memory is not None:
            total, free, used = (self._mib(memory, name, errors) for name in ("total", "free", "used"))
        rates = self.attempt(key, "utilization", partial(call, module, "nvmlDeviceGetUtilizationRates", handle), errors)
        utilization = int_or_none(getattr(rates, "gpu", None)) if rates is not None else None
        return GpuInfo(
            vendor="nvidia",
            index=device.index,
            uuid=device.uuid,
            name=device.name,
            pci_bus_id=device.pci_bus_id,
            pci_description=device.pci_description,
            vram_total_mib=total,
            vram_free_mib=free,
            vram_used_mib=used,
            utilization_percent=None if utilization is None else float(utilization),
            processes=self._processes(module, key, handle, errors),
            errors=tuple(errors),
        )

    @staticmethod
    def _mib(memory: object, name: str, errors: list[str]) -> int | None:
        value = int_or_none(getattr(memory, name, None))
        if value is None:
            errors.append(f"memory.{name}: not reported")
            return None
        return value // MIB

    def _processes(self, module: ModuleType, key: str, handle: object, errors: list[str]) -> tuple[GpuProcess, ...]:
        used: dict[int, int | None] = {}
        for kind in ("Compute", "Graphics"):
            function = f"nvmlDeviceGet{kind}RunningProcesses"
            if not hasattr(module, function):  # absent from very old bindings; not an error
                continue
            entries = self.attempt(key, f"processes.{kind.lower()}", partial(call, module, function, handle), errors)
            for entry in _iterable(entries):
                pid = int_or_none(getattr(entry, "pid", None))
                if pid is None:
                    continue
                raw = int_or_none(getattr(entry, "usedGpuMemory", None))  # None: driver cannot say
                mib = None if raw is None else raw // MIB
                # A process using both engines is listed twice with the same allocation.
                previous = used.get(pid)
                used[pid] = mib if previous is None else max(previous, mib or 0)
        return tuple(GpuProcess(pid, mib) for pid, mib in sorted(used.items()))

    def _shutdown(self) -> None:
        module = self._module
        self._devices = []
        if module is not None:
            module.nvmlShutdown()
