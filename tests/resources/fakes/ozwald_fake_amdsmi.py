# SPDX-License-Identifier: AGPL-3.0-or-later
"""A stand-in for AMD's `amdsmi` Python package, faithful at the API boundary Ozwald uses.

Mirrors amdsmi 6.x/7.x (checked against py-interface/amdsmi_interface.py and amdsmi_exception.py):
- exceptions: AmdSmiException <- AmdSmiLibraryException(err_code) <- AmdSmiRetryException /
  AmdSmiTimeoutException, and AmdSmiParameterException for a wrong argument type;
- `amdsmi_init(flag=AmdSmiInitFlags.INIT_AMD_GPUS)` rejects a flag that is not an AmdSmiInitFlags;
- every per-device call rejects anything that is not a processor handle (AmdSmiParameterException)
  and raises AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT) before init;
- amdsmi_get_gpu_vram_usage returns {"vram_total", "vram_used"} in MB; amdsmi_get_gpu_memory_total
  and amdsmi_get_gpu_memory_usage return bytes; unsupported activity counters are the string "N/A";
- amdsmi_get_gpu_process_list returns dicts (>= 6.1) or, with `legacy_process_handles`, opaque
  process handles to pass to amdsmi_get_gpu_process_info (< 6.1).
"""

from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum

# Values of amdsmi_wrapper.AMDSMI_STATUS_* in amdsmi 7.0.2.
AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_DRM_ERROR = 6
AMDSMI_STATUS_TIMEOUT = 8
AMDSMI_STATUS_RETRY = 9
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_FILE_ERROR = 14
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_UNKNOWN_ERROR = 0xFFFFFFFF

_INFO = {
    AMDSMI_STATUS_INVAL: "AMDSMI_STATUS_INVAL - Invalid parameters",
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_NO_PERM: "AMDSMI_STATUS_NO_PERM - Permission Denied",
    AMDSMI_STATUS_INIT_ERROR: "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    AMDSMI_STATUS_DRM_ERROR: "AMDSMI_STATUS_DRM_ERROR - Error when called libdrm",
    AMDSMI_STATUS_NOT_INIT: "AMDSMI_STATUS_NOT_INIT - Device not initialized",
}


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _INFO.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"An error occured with code: {self.err_code}({self.err_info})"

    def get_error_code(self) -> int:
        return self.err_code


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_RETRY)


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_TIMEOUT)


class AmdSmiParameterException(AmdSmiException):
    def __init__(self, receivedValue: object, expectedType: object, msg: str | None = None) -> None:
        super().__init__(msg)
        self.err_msg = msg or f"Invalid parameter:\nActual type: {type(receivedValue)}\nExpected type: {expectedType}"

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 0xFFFFFFFF
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8
    INIT_AMD_APUS = 3


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class amdsmi_processor_handle:
    """Opaque ctypes pointer in the real package."""

    def __init__(self, owner: FakeAmdSmi, position: int) -> None:
        self._owner = owner
        self._position = position


class amdsmi_process_handle_t:
    def __init__(self, pid: int) -> None:
        self.value = pid


MB = 1024 * 1024


@dataclass
class FakeAmdGpu:
    market_name: str = "AMD Instinct MI300X"
    uuid: str = "81ff74a1-0000-1000-8000-1122334455aa"
    bdf: str = "0000:c1:00.0"
    vram_total_mb: int = 196592
    vram_used_mb: int = 283
    gfx_activity: int | str = 3
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, vram bytes)
    driver_version: str = "6.10.5"
    # function name (e.g. "amdsmi_get_gpu_vram_usage") -> AMDSMI status code to raise
    failures: dict[str, int] = field(default_factory=dict)


class FakeAmdSmi:
    def __init__(
        self,
        gpus: list[FakeAmdGpu] | None = None,
        *,
        init_error: int | None = None,
        legacy_process_handles: bool = False,
    ) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.legacy_process_handles = legacy_process_handles
        self.initialised = False
        self.calls: Counter[str] = Counter()

    def _device(self, name: str, handle: object) -> FakeAmdGpu:
        self.calls[name] += 1
        if not isinstance(handle, amdsmi_processor_handle):
            raise AmdSmiParameterException(handle, amdsmi_processor_handle)
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        gpu = self.gpus[handle._position]
        if name in gpu.failures:
            raise AmdSmiLibraryException(gpu.failures[name])
        return gpu

    def amdsmi_init(self, flag: AmdSmiInitFlags = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        self.calls["amdsmi_init"] += 1
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)
        self.initialised = True

    def amdsmi_shut_down(self) -> None:
        self.calls["amdsmi_shut_down"] += 1
        self.initialised = False

    def amdsmi_get_processor_handles(self) -> list[amdsmi_processor_handle]:
        self.calls["amdsmi_get_processor_handles"] += 1
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)
        return [amdsmi_processor_handle(self, position) for position in range(len(self.gpus))]

    def amdsmi_get_gpu_device_bdf(self, handle: object) -> str:
        return self._device("amdsmi_get_gpu_device_bdf", handle).bdf

    def amdsmi_get_gpu_device_uuid(self, handle: object) -> str:
        return self._device("amdsmi_get_gpu_device_uuid", handle).uuid

    def amdsmi_get_gpu_asic_info(self, handle: object) -> dict[str, object]:
        gpu = self._device("amdsmi_get_gpu_asic_info", handle)
        return {
            "market_name": gpu.market_name,
            "vendor_id": "0x1002",
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "subvendor_id": "0x1002",
            "device_id": "0x74a1",
            "rev_id": "0x00",
            "asic_serial": "0x1122334455667788",
            "oam_id": 0,
            "num_compute_units": 304,
            "target_graphics_version": "gfx942",
            "subsystem_id": "0x74a1",
        }

    def amdsmi_get_gpu_driver_info(self, handle: object) -> dict[str, str]:
        gpu = self._device("amdsmi_get_gpu_driver_info", handle)
        return {"driver_name": "amdgpu", "driver_version": gpu.driver_version, "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_gpu_vram_usage(self, handle: object) -> dict[str, int]:
        gpu = self._device("amdsmi_get_gpu_vram_usage", handle)
        return {"vram_total": gpu.vram_total_mb, "vram_used": gpu.vram_used_mb}

    def amdsmi_get_gpu_memory_total(self, handle: object, mem_type: AmdSmiMemoryType) -> int:
        gpu = self._device("amdsmi_get_gpu_memory_total", handle)
        if not isinstance(mem_type, AmdSmiMemoryType):
            raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
        return gpu.vram_total_mb * MB

    def amdsmi_get_gpu_memory_usage(self, handle: object, mem_type: AmdSmiMemoryType) -> int:
        gpu = self._device("amdsmi_get_gpu_memory_usage", handle)
        if not isinstance(mem_type, AmdSmiMemoryType):
            raise AmdSmiParameterException(mem_type, AmdSmiMemoryType)
        return gpu.vram_used_mb * MB

    def amdsmi_get_gpu_activity(self, handle: object) -> dict[str, int | str]:
        gpu = self._device("amdsmi_get_gpu_activity", handle)
        return {"gfx_activity": gpu.gfx_activity, "umc_activity": "N/A", "mm_activity": "N/A"}

    @staticmethod
    def _process_info(pid: int, vram: int) -> dict[str, object]:
        return {
            "name": "python3",
            "pid": pid,
            "mem": vram,
            "engine_usage": {"gfx": 0, "enc": 0},
            "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": vram},
            "cu_occupancy": "N/A",
        }

    def amdsmi_get_gpu_process_list(self, handle: object) -> list[object]:
        gpu = self._device("amdsmi_get_gpu_process_list", handle)
        if self.legacy_process_handles:
            return [amdsmi_process_handle_t(pid) for pid, _ in gpu.processes]
        return [self._process_info(pid, vram) for pid, vram in gpu.processes]

    def amdsmi_get_gpu_process_info(self, handle: object, process: object) -> dict[str, object]:
        gpu = self._device("amdsmi_get_gpu_process_info", handle)
        if not isinstance(process, amdsmi_process_handle_t):
            raise AmdSmiParameterException(process, amdsmi_process_handle_t)
        vram = dict(gpu.processes)[process.value]
        return self._process_info(process.value, vram)

    def module(self) -> types.ModuleType:
        """A fresh `amdsmi` module object backed by this simulated host."""
        module = types.ModuleType("amdsmi")
        for name, value in globals().items():
            if name.startswith(("AmdSmi", "AMDSMI_")):
                setattr(module, name, value)
        for name in dir(self):
            if name.startswith("amdsmi_"):
                setattr(module, name, getattr(self, name))
        if self.legacy_process_handles is False:
            # amdsmi_get_gpu_process_info was removed together with the handle-based list.
            delattr(module, "amdsmi_get_gpu_process_info")
        return module


KEYERROR_PACKAGE = {
    # What amdsmi 7.0.2 does on a host without ROCm: its generated ctypes wrapper indexes a dict
    # of loaded libraries that stayed empty because libamd_smi.so could not be opened.
    "amdsmi/__init__.py": "from .amdsmi_interface import *  # noqa: F403\n",
    "amdsmi/amdsmi_interface.py": "from . import amdsmi_wrapper\n",
    "amdsmi/amdsmi_wrapper.py": (
        "_libraries = {}\n"
        "print('Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager')\n"
        "amdsmi_free_name_value_pairs = _libraries['libamd_smi.so'].amdsmi_free_name_value_pairs\n"
    ),
}
