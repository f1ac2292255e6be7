# SPDX-License-Identifier: AGPL-3.0-or-later
"""Measuring a unit's processes from /proc, and attributing VRAM to the right GPU (stand-in NVML)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import ozwald_fake_pynvml as fake

from ozwald.resources import HostResourceMonitor, NvidiaBackend
from ozwald.resources.procs import FootprintSampler, cgroup_pids, read_process, unit_cgroup, vram_by_gpu
from tests.resources.conftest import Describer, Installer

ALLOCATE = """
import sys, time
ballast = bytearray(int(sys.argv[1]) * 1024 * 1024)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
print("ready", flush=True)
time.sleep(60)
"""
TOLERANCE_MIB = 40  # the interpreter itself (about 10 MiB) plus page-rounding


def test_ram_and_cpu_of_a_real_process_within_tolerance() -> None:
    child = subprocess.Popen([sys.executable, "-c", ALLOCATE, "150"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        sampler = FootprintSampler()
        start = time.monotonic()
        for step in range(3):
            sampler.sample(start + step, [child.pid, 999_999_999])  # a pid that does not exist is skipped
        assert 150 <= sampler.ram_peak_mib <= 150 + TOLERANCE_MIB
        steady = sampler.ram_steady_mib(start)
        assert steady is not None and 150 <= steady <= 150 + TOLERANCE_MIB
        assert sampler.cpu_seconds() > 0  # touching 150 MiB takes some CPU
        reading = read_process(child.pid)
        assert reading is not None and reading.hwm_kib >= reading.rss_kib > 150 * 1024
    finally:
        child.kill()
        child.wait()


def test_the_payload_cgroup_is_preferred_and_the_cgroup_found_from_the_main_pid(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    unit = root / "system.slice" / "ozwald-echo.service"
    payload = unit / "libpod-payload-0123"
    payload.mkdir(parents=True)
    (unit / "cgroup.procs").write_text("10\n11\n")  # conmon, podman
    (payload / "cgroup.procs").write_text("20\n21\n")
    pids, which = cgroup_pids(unit)
    assert sorted(pids) == [20, 21] and "libpod-payload" in which
    (payload / "cgroup.procs").write_text("")
    (payload / "cgroup.procs").unlink()
    payload.rmdir()
    assert cgroup_pids(unit) == ([10, 11], "every process in the unit's cgroup")
    proc = tmp_path / "proc"
    (proc / "10").mkdir(parents=True)
    (proc / "10" / "cgroup").write_text("0::/system.slice/ozwald-echo.service/libpod-payload-0123\n")
    assert unit_cgroup("ozwald-echo.service", 10, proc=proc, root=root) == unit
    assert unit_cgroup("ozwald-echo.service", 0, proc=proc, root=root) == unit  # by name under system.slice
    assert unit_cgroup("ozwald-gone.service", 0, proc=proc, root=root) is None


def _monitor(install_pynvml: Installer, no_pci_sysfs: Describer, gpus: list[fake.FakeNvidiaGpu]) -> HostResourceMonitor:
    install_pynvml(fake.FakeNvml(gpus))
    return HostResourceMonitor(backends=[NvidiaBackend(describe_pci=no_pci_sysfs)], cpu_count=4,
                               memory=lambda: (64 * fake.GiB, 32 * fake.GiB))


def test_vram_per_process_is_attributed_to_the_gpu_the_run_uses(install_pynvml: Installer,
                                                                 no_pci_sysfs: Describer) -> None:
    gpus = [fake.FakeNvidiaGpu(uuid="GPU-a", bus_id="00000000:01:00.0", used_bytes=9 * fake.GiB,
                               compute_processes=[(4242, 8 * fake.GiB)]),  # somebody else's process
            fake.FakeNvidiaGpu(uuid="GPU-b", bus_id="00000000:02:00.0", used_bytes=3 * fake.GiB,
                               compute_processes=[(777, 2 * fake.GiB)], graphics_processes=[(777, 2 * fake.GiB)])]
    snapshot = _monitor(install_pynvml, no_pci_sysfs, gpus).snapshot()
    assert vram_by_gpu(snapshot, [777, 778], {"nvidia:0": 1024, "nvidia:1": 1024}) == {
        "nvidia:1": (2048.0, "NVML per-process")}


def test_vram_device_delta_where_the_driver_does_not_say_per_process(install_pynvml: Installer,
                                                                    no_pci_sysfs: Describer) -> None:
    gpus = [fake.FakeNvidiaGpu(uuid="GPU-a", bus_id="00000000:01:00.0", used_bytes=1 * fake.GiB),
            fake.FakeNvidiaGpu(uuid="GPU-b", bus_id="00000000:02:00.0", used_bytes=6 * fake.GiB,
                               compute_processes=[(777, None)])]
    monitor = _monitor(install_pynvml, no_pci_sysfs, gpus)
    baseline = {g.id: g.vram_used_mib or 0 for g in monitor.snapshot().gpus}
    gpus[1].used_bytes = 10 * fake.GiB  # the run's process grew; NVML cannot say per process
    sampler = FootprintSampler()
    sampler.sample(0.0, [777], monitor.snapshot(), baseline)
    gpus[1].used_bytes = 8 * fake.GiB
    sampler.sample(1.0, [777], monitor.snapshot(), baseline)
    assert sampler.vram_peak_mib == {"nvidia:1": 4096.0}
    assert sampler.vram_methods == {"device delta"}
