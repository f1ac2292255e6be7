# SPDX-License-Identifier: AGPL-3.0-or-later
"""The host snapshot: one cheap call the HTTP layer and admission can make on every request.

The expensive, long-lived parts (vendor library sessions with their device handles, the CPU
sampler thread) belong to a `HostResourceMonitor` created once at provisioner start; `snapshot()`
then only asks the drivers for current numbers and reads the sampler's last value.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from types import TracebackType

import psutil

from ozwald.resources._failures import FailureLog
from ozwald.resources.amd import AmdBackend
from ozwald.resources.backend import GpuBackend, VendorReading
from ozwald.resources.cpu import CpuLoadSampler
from ozwald.resources.models import GpuInfo, HostSnapshot, VendorStatus
from ozwald.resources.nvidia import NvidiaBackend

log = logging.getLogger(__name__)


def _virtual_memory() -> tuple[int, int]:
    memory = psutil.virtual_memory()
    return int(memory.total), int(memory.available)


def _logical_cpus() -> int:
    # Logical CPUs, because that is the unit podman's --cpus and systemd's CPUQuota count in.
    return psutil.cpu_count(logical=True) or os.cpu_count() or 1


def default_backends() -> tuple[GpuBackend, ...]:
    return (NvidiaBackend(), AmdBackend())


class HostResourceMonitor:
    """Owns the vendor sessions and the CPU sampler; hands out immutable `HostSnapshot`s.

    Thread-safe: snapshots may be taken from several request threads at once (each vendor backend
    serialises its own library calls).
    """

    def __init__(
        self,
        *,
        backends: Sequence[GpuBackend] | None = None,
        cpu_sampler: CpuLoadSampler | None = None,
        memory: Callable[[], tuple[int, int]] = _virtual_memory,
        cpu_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backends = tuple(backends) if backends is not None else default_backends()
        vendors = [backend.vendor for backend in self._backends]
        if len(vendors) != len(set(vendors)):
            raise ValueError(f"one backend per vendor, got {vendors}")
        self._sampler = cpu_sampler if cpu_sampler is not None else CpuLoadSampler()
        self._memory = memory
        self._cpu_count = cpu_count if cpu_count is not None else _logical_cpus()
        self._clock = clock
        self._failures = FailureLog(log)

    @property
    def cpu_sampler(self) -> CpuLoadSampler:
        return self._sampler

    def start(self) -> tuple[VendorStatus, ...]:
        """Start sampling and open the vendor libraries now, so the first request is not the one
        paying for NVML initialisation; returns each vendor's status for the startup log."""
        self._sampler.start()
        statuses = []
        for backend in self._backends:
            try:
                statuses.append(backend.open())
            except Exception as exc:  # a detector bug must not stop the provisioner from starting
                reason = self._failures.unexpected(f"{backend.vendor} open", exc)
                statuses.append(VendorStatus(backend.vendor, available=False, reason=reason))
        return tuple(statuses)

    def stop(self) -> None:
        self._sampler.stop()
        for backend in self._backends:
            try:
                backend.close()
            except Exception as exc:
                self._failures.unexpected(f"{backend.vendor} close", exc)

    def _read(self, backend: GpuBackend) -> VendorReading:
        try:
            return backend.read()
        except Exception as exc:  # isolate vendors: one detector's bug must not hide the other's GPUs
            reason = self._failures.unexpected(f"{backend.vendor} read", exc)
            return VendorReading(VendorStatus(backend.vendor, available=False, reason=f"detection failed: {reason}"))

    def snapshot(self) -> HostSnapshot:
        readings = [self._read(backend) for backend in self._backends]
        gpus: tuple[GpuInfo, ...] = tuple(gpu for reading in readings for gpu in reading.gpus)
        load = self._sampler.load_percent
        cores = self._cpu_count
        available_cores = float(cores) if load is None else cores * (1.0 - load / 100.0)
        ram_total, ram_available = self._memory()
        return HostSnapshot(
            taken_at=self._clock(),
            cpu_cores_total=cores,
            cpu_load_percent=load,
            cpu_cores_available=round(max(0.0, available_cores), 2),
            ram_total_bytes=ram_total,
            ram_available_bytes=ram_available,
            gpus=gpus,
            vendors=tuple(reading.status for reading in readings),
        )

    def __enter__(self) -> HostResourceMonitor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
