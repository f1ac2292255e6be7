# SPDX-License-Identifier: AGPL-3.0-or-later
"""What one systemd unit's container uses, read from /proc: RAM, CPU, and its share of each GPU's VRAM.

The memory controller is not always there (a cgroup2 tree without controllers, as in containers and in
Ozwald's own test host), so memory is not read from `memory.current`/`memory.peak` but from the
processes themselves: every process listed in `cgroup.procs` of the unit's cgroup and its children, and
of those, the container's payload (Podman puts it in a `libpod-payload-*` child cgroup; conmon and podman
stay in the unit's own cgroup) when that child exists. Per process: `VmRSS` (resident now) and `VmHWM`
(its resident high-water mark), from /proc/<pid>/status; CPU time from /proc/<pid>/stat.

The peak is the larger of the highest sampled sum of VmRSS and the highest sum of VmHWM (which catches a
peak between two samples; for several processes peaking at different times it over-states, the safe side
for admission). Memory shared between processes (shared libraries) is counted once per process.

VRAM: NVML lists the processes using each GPU with their memory; the run's share of a GPU is the sum over
its processes. Where the driver does not say per process, the GPU's used memory minus what it used
before the run started (the device delta) is attributed to the run, on that GPU only. A GPU that does
list processes with their memory, none of them the run's, is one the run does not use.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ozwald.resources.models import HostSnapshot

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
PAYLOAD_PREFIX = "libpod-payload"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAYLOAD_METHOD = "the container's processes (its libpod-payload cgroup)"


def unit_cgroup(unit: str, main_pid: int = 0, *, proc: Path = PROC, root: Path = CGROUP_ROOT) -> Path | None:
    """The unit's cgroup directory: found from its main process, else under system.slice; None if absent."""
    if main_pid > 0:
        try:
            lines = (proc / str(main_pid) / "cgroup").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            hierarchy, _, path = line.partition("::")
            if hierarchy == "0" and f"/{unit}" in path:
                head = path[: path.index(f"/{unit}") + len(unit) + 1]
                candidate = root / head.lstrip("/")
                if candidate.is_dir():
                    return candidate
    fallback = root / "system.slice" / unit
    return fallback if fallback.is_dir() else None


def cgroup_pids(cgroup: Path) -> tuple[list[int], str]:
    """The processes to measure, and which: the payload's when Podman made a payload cgroup, else all."""
    payload: list[int] = []
    every: list[int] = []
    for directory, _, files in os.walk(cgroup):
        if "cgroup.procs" not in files:
            continue
        try:
            pids = [int(x) for x in Path(directory, "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            continue
        every += pids
        if PAYLOAD_PREFIX in Path(directory).name or any(PAYLOAD_PREFIX in part for part in Path(directory).parts):
            payload += pids
    if payload:
        return payload, PAYLOAD_METHOD
    return every, "every process in the unit's cgroup"


@dataclass(frozen=True)
class ProcReading:
    pid: int
    rss_kib: int
    hwm_kib: int
    cpu_ticks: int


def read_process(pid: int, proc: Path = PROC) -> ProcReading | None:
    """VmRSS, VmHWM and user+system CPU ticks of one process; None if it is gone (or a kernel thread)."""
    try:
        status = (proc / str(pid) / "status").read_text()
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ProcReading(pid, values.get("VmRSS", 0), values.get("VmHWM", 0), ticks)


def vram_by_gpu(snapshot: HostSnapshot, pids: Iterable[int], baseline: Mapping[str, int]
                ) -> dict[str, tuple[float, str]]:
    """MiB of each GPU the run uses now, with how it was found: NVML per-process where the driver says,
    else the device delta against `baseline` (GPU id → MiB used before the run). GPUs at 0 are left out."""
    ours = set(pids)
    out: dict[str, tuple[float, str]] = {}
    for gpu in snapshot.gpus:
        mine = [p for p in gpu.processes if p.pid in ours]
        # Per-process numbers are trusted where the GPU lists processes with their memory: then a GPU
        # where the run's processes are absent is one the run does not use, whatever others allocate.
        per_process = any(p.used_vram_mib is not None for p in gpu.processes)
        if per_process and all(p.used_vram_mib is not None for p in mine):
            used = float(sum(p.used_vram_mib or 0 for p in mine))
            method = "NVML per-process"
        elif gpu.vram_used_mib is not None and gpu.id in baseline:
            used = float(max(0, gpu.vram_used_mib - baseline[gpu.id]))
            method = "device delta"
        else:
            continue
        if used > 0:
            out[gpu.id] = (used, method)
    return out


@dataclass
class FootprintSampler:
    """Accumulates samples of one run: RAM (sum over processes), CPU (per process, cumulative), VRAM per GPU."""

    proc: Path = PROC
    ram_peak_kib: int = 0
    samples: int = 0
    ram_series: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, sum of VmRSS KiB)
    cpu_ticks: dict[int, int] = field(default_factory=dict)  # pid → highest ticks seen
    cpu_series: list[tuple[float, int]] = field(default_factory=list)  # (time, total ticks of every pid seen)
    vram_peak_mib: dict[str, float] = field(default_factory=dict)
    vram_methods: set[str] = field(default_factory=set)
    method: str = ""

    def sample(self, now: float, pids: Iterable[int], snapshot: HostSnapshot | None = None,
               baseline: Mapping[str, int] | None = None) -> None:
        pid_list = list(pids)
        rss = hwm = 0
        for pid in pid_list:
            reading = read_process(pid, self.proc)
            if reading is None:
                continue
            rss += reading.rss_kib
            hwm += reading.hwm_kib
            self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), reading.cpu_ticks)
        self.samples += 1
        self.ram_peak_kib = max(self.ram_peak_kib, rss, hwm)
        self.ram_series.append((now, rss))
        self.cpu_series.append((now, sum(self.cpu_ticks.values())))
        if snapshot is not None:
            for gpu_id, (mib, how) in vram_by_gpu(snapshot, pid_list, baseline or {}).items():
                self.vram_peak_mib[gpu_id] = max(self.vram_peak_mib.get(gpu_id, 0.0), mib)
                self.vram_methods.add(how)

    @property
    def ram_peak_mib(self) -> float:
        return round(self.ram_peak_kib / 1024, 1)

    def ram_steady_mib(self, since: float) -> float | None:
        """The median of the sums of VmRSS sampled since `since` (the hold)."""
        values = sorted(rss for t, rss in self.ram_series if t >= since and rss > 0)
        if not values:
            return None
        return round(values[len(values) // 2] / 1024, 1)

    def cpu_seconds(self, until: float | None = None) -> float:
        points = [ticks for t, ticks in self.cpu_series if until is None or t <= until]
        return round((points[-1] if points else 0) / CLOCK_TICKS, 2)

    def cpu_cores(self, since: float) -> tuple[float | None, float | None]:
        """Mean and highest cores busy between samples since `since`."""
        points = [(t, ticks) for t, ticks in self.cpu_series if t >= since]
        if len(points) < 2 or points[-1][0] <= points[0][0]:
            return None, None
        mean = (points[-1][1] - points[0][1]) / CLOCK_TICKS / (points[-1][0] - points[0][0])
        peak = max(((b[1] - a[1]) / CLOCK_TICKS / (b[0] - a[0]) for a, b in itertools.pairwise(points)
                    if b[0] > a[0]), default=0.0)
        return round(mean, 3), round(peak, 3)
