# SPDX-License-Identifier: AGPL-3.0-or-later
"""A stand-in for nvidia-ml-py's `pynvml`, faithful at the API boundary Ozwald uses.

Mirrors the real binding (checked against nvidia-ml-py 13.x and the 11.x series):
- `NVMLError(code)` returns an instance of the matching generated subclass
  (`NVMLError_LibraryNotFound`, `NVMLError_GpuIsLost`, ...), each subclass can be raised with no
  argument, and `str()` gives NVML's message;
- every query before `nvmlInit()` (or after the last `nvmlShutdown()`) raises NVMLError_Uninitialized;
- memory info carries `.total/.free/.used` in bytes, utilisation `.gpu/.memory` in percent;
- process entries carry `.pid` and `.usedGpuMemory` in bytes, None where NVML cannot say;
- strings are `str` in current releases and `bytes` in releases before 11.515 (`legacy_bytes`).

A `FakeNvml` holds the simulated host; `module()` builds a fresh module object for sys.modules.
"""

from __future__ import annotations

import string
import sys
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    value: int
    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, *args: object) -> None:
        super().__init__()

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _generate_subclasses() -> dict[str, type[NVMLError]]:
    generated: dict[str, type[NVMLError]] = {}
    this_module = sys.modules[__name__]
    for err_name in [x for x in dir(this_module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        err_val = getattr(this_module, err_name)

        def gen_new(val: int) -> Callable[..., NVMLError]:  # the real binding's closure: no argument needed
            def new(typ: type[NVMLError], *args: object) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        NVMLError._valClassMapping[err_val] = cls
        generated[class_name] = cls
    return generated


ERROR_CLASSES = _generate_subclasses()
globals().update(ERROR_CLASSES)

MiB = 1024 * 1024
GiB = 1024 * MiB


class c_nvmlDevice_t:
    """Opaque handle, as ctypes pointers are in the real binding."""

    def __init__(self, owner: FakeNvml, index: int) -> None:
        self._owner = owner
        self._index = index


class c_nvmlMemory_t:
    def __init__(self, total: int, free: int, used: int) -> None:
        self.total, self.free, self.used = total, free, used


class c_nvmlUtilization_t:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu, self.memory = gpu, memory


class nvmlPciInfo_t:
    def __init__(self, bus_id: str | bytes) -> None:
        self.busId = bus_id
        self.busIdLegacy = bus_id


class nvmlFriendlyObject:
    def __init__(self, **fields: object) -> None:
        for key, value in fields.items():
            setattr(self, key, value)


@dataclass
class FakeNvidiaGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    bus_id: str = "00000000:01:00.0"
    total_bytes: int = 80 * GiB
    used_bytes: int = 1 * GiB
    utilization: int = 7
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)
    # function name (without the nvml prefix, e.g. "DeviceGetMemoryInfo") -> NVML error code to raise
    failures: dict[str, int] = field(default_factory=dict)
    # function name -> arbitrary exception to raise (to simulate a binding bug)
    crashes: dict[str, BaseException] = field(default_factory=dict)


class FakeNvml:
    def __init__(
        self,
        gpus: list[FakeNvidiaGpu] | None = None,
        *,
        init_error: int | None = None,
        count_error: int | None = None,
        driver_version: str = "550.54.15",
        legacy_bytes: bool = False,
    ) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.count_error = count_error
        self.driver_version = driver_version
        self.legacy_bytes = legacy_bytes
        self.refcount = 0
        self.calls: Counter[str] = Counter()

    # -- helpers --------------------------------------------------------------------------------
    def _text(self, value: str) -> str | bytes:
        return value.encode() if self.legacy_bytes else value

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if self.refcount <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _device(self, name: str, handle: object) -> FakeNvidiaGpu:
        self._enter(name)
        if not isinstance(handle, c_nvmlDevice_t) or handle._owner is not self:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle._index]
        if name in gpu.crashes:
            raise gpu.crashes[name]
        if name in gpu.failures:
            raise NVMLError(gpu.failures[name])
        return gpu

    # -- the API --------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["Init"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self._enter("Shutdown")
        self.refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._enter("SystemGetDriverVersion")
        return self._text(self.driver_version)

    def nvmlDeviceGetCount(self) -> int:
        self._enter("DeviceGetCount")
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> c_nvmlDevice_t:
        self._enter("DeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if "DeviceGetHandleByIndex" in gpu.failures:
            raise NVMLError(gpu.failures["DeviceGetHandleByIndex"])
        return c_nvmlDevice_t(self, index)

    def nvmlDeviceGetName(self, handle: object) -> str | bytes:
        return self._text(self._device("DeviceGetName", handle).name)

    def nvmlDeviceGetUUID(self, handle: object) -> str | bytes:
        return self._text(self._device("DeviceGetUUID", handle).uuid)

    def nvmlDeviceGetPciInfo(self, handle: object) -> nvmlPciInfo_t:
        return nvmlPciInfo_t(self._text(self._device("DeviceGetPciInfo", handle).bus_id))

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> c_nvmlMemory_t:
        gpu = self._device("DeviceGetMemoryInfo", handle)
        return c_nvmlMemory_t(gpu.total_bytes, gpu.total_bytes - gpu.used_bytes, gpu.used_bytes)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> c_nvmlUtilization_t:
        return c_nvmlUtilization_t(self._device("DeviceGetUtilizationRates", handle).utilization, 0)

    def _processes(self, entries: list[tuple[int, int | None]]) -> list[nvmlFriendlyObject]:
        return [
            nvmlFriendlyObject(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
            for pid, used in entries
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[nvmlFriendlyObject]:
        return self._processes(self._device("DeviceGetComputeRunningProcesses", handle).compute_processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: object) -> list[nvmlFriendlyObject]:
        return self._processes(self._device("DeviceGetGraphicsRunningProcesses", handle).graphics_processes)

    def module(self) -> types.ModuleType:
        """A fresh `pynvml` module object backed by this simulated host."""
        module = types.ModuleType("pynvml")
        for name, value in globals().items():
            if name.startswith(("NVML_", "NVMLError", "c_nvml", "nvml")):
                setattr(module, name, value)
        for name in dir(self):
            if name.startswith("nvml"):
                setattr(module, name, getattr(self, name))
        return module
