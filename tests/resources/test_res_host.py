# SPDX-License-Identifier: AGPL-3.0-or-later
"""Whole-host snapshots: CPU-only hosts, mixed NVIDIA + AMD hosts, and isolation between vendors."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import ozwald_fake_amdsmi as fake_amd
import ozwald_fake_pynvml as fake_nv
import psutil
import pytest

from ozwald.resources import (
    AmdBackend,
    CpuLoadSampler,
    GpuInfo,
    HostResourceMonitor,
    HostSnapshot,
    NvidiaBackend,
    VendorReading,
    VendorStatus,
)
from tests.resources.conftest import Describer, Installer


class FixedSampler(CpuLoadSampler):
    """A sampler whose latest value the test sets; it never starts a thread."""

    def __init__(self, load: float | None) -> None:
        super().__init__(interval=60.0)
        self.value = load
        self.started = self.stopped = False

    @property
    def load_percent(self) -> float | None:
        return self.value

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float | None = 5.0) -> None:
        self.stopped = True


def monitor(no_pci_sysfs: Describer, *, load: float | None = 25.0, backends: Any = None) -> HostResourceMonitor:
    return HostResourceMonitor(
        backends=backends
        if backends is not None
        else (NvidiaBackend(describe_pci=no_pci_sysfs), AmdBackend(describe_pci=no_pci_sysfs)),
        cpu_sampler=FixedSampler(load),
        memory=lambda: (64 * 1024**3, 48 * 1024**3),
        cpu_count=16,
        clock=lambda: 1234.5,
    )


def test_cpu_only_host(install_pynvml: Installer, install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    install_pynvml.missing()
    install_amdsmi.missing()
    snap = monitor(no_pci_sysfs).snapshot()
    assert snap.gpus == ()
    assert [s.vendor for s in snap.vendors] == ["nvidia", "amd"]
    assert all(not s.available and s.reason for s in snap.vendors)
    assert snap.cpu_cores_total == 16
    assert snap.cpu_load_percent == 25.0
    assert snap.cpu_cores_available == 12.0
    assert snap.ram_total_gb == 64.0 and snap.ram_available_gb == 48.0
    assert snap.taken_at == 1234.5


def test_unknown_load_assumes_idle_instead_of_blocking(install_pynvml: Installer, install_amdsmi: Installer,
                                                       no_pci_sysfs: Describer) -> None:
    install_pynvml.missing()
    install_amdsmi.missing()
    snap = monitor(no_pci_sysfs, load=None).snapshot()
    assert snap.cpu_load_percent is None
    assert snap.cpu_cores_available == 16.0


def test_mixed_host_ids_never_collide(install_pynvml: Installer, install_amdsmi: Installer,
                                      no_pci_sysfs: Describer) -> None:
    install_pynvml(fake_nv.FakeNvml([fake_nv.FakeNvidiaGpu(uuid="GPU-n0"), fake_nv.FakeNvidiaGpu(uuid="GPU-n1")]))
    install_amdsmi(fake_amd.FakeAmdSmi([fake_amd.FakeAmdGpu(uuid="a0")]))
    snap = monitor(no_pci_sysfs).snapshot()
    assert [g.id for g in snap.gpus] == ["nvidia:0", "nvidia:1", "amd:0"]
    assert [g.index for g in snap.gpus] == [0, 1, 0], "both vendors count from 0..."
    assert len({g.id for g in snap.gpus}) == 3, "...but the ids stay unique"
    assert len({g.cdi_name for g in snap.gpus}) == 3
    amd0, nvidia1 = snap.gpu("amd:0"), snap.gpu("nvidia:1")
    assert amd0 is not None and amd0.uuid == "a0"
    assert nvidia1 is not None and nvidia1.uuid == "GPU-n1"
    nvidia, amd = snap.vendor("nvidia"), snap.vendor("amd")
    assert nvidia is not None and nvidia.available and amd is not None and amd.available


def test_snapshot_rejects_duplicate_ids() -> None:
    gpu = GpuInfo("nvidia", 0)
    with pytest.raises(ValueError, match="unique"):
        HostSnapshot(0.0, 1, None, 1.0, 1, 1, gpus=(gpu, dataclasses.replace(gpu)))


def test_one_vendor_crashing_does_not_hide_the_other(install_pynvml: Installer, no_pci_sysfs: Describer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    install_pynvml(fake_nv.FakeNvml([fake_nv.FakeNvidiaGpu()]))

    class BrokenAmd:
        vendor = "amd"

        def open(self) -> VendorStatus:
            raise RuntimeError("bug in open")

        def read(self) -> VendorReading:
            raise RuntimeError("bug in read")

        def close(self) -> None:
            raise RuntimeError("bug in close")

    mon = monitor(no_pci_sysfs, backends=(NvidiaBackend(describe_pci=no_pci_sysfs), BrokenAmd()))
    with caplog.at_level(logging.ERROR):
        statuses = mon.start()
        snap = mon.snapshot()
        mon.stop()
    assert [s.available for s in statuses] == [True, False]
    assert [g.id for g in snap.gpus] == ["nvidia:0"]
    amd = snap.vendor("amd")
    assert amd is not None and not amd.available and "bug in read" in (amd.reason or "")
    assert "bug in read" in caplog.text


def test_start_opens_backends_eagerly_and_stop_closes(install_pynvml: Installer, install_amdsmi: Installer,
                                                      no_pci_sysfs: Describer) -> None:
    nvml = fake_nv.FakeNvml([fake_nv.FakeNvidiaGpu()])
    install_pynvml(nvml)
    install_amdsmi.missing()
    mon = monitor(no_pci_sysfs)
    with mon:
        assert isinstance(mon.cpu_sampler, FixedSampler) and mon.cpu_sampler.started
        assert nvml.calls["Init"] == 1, "opened at start, not on the first request"
        mon.snapshot()
        assert nvml.calls["Init"] == 1
    assert isinstance(mon.cpu_sampler, FixedSampler) and mon.cpu_sampler.stopped
    assert nvml.refcount == 0


def test_snapshot_never_calls_blocking_cpu_percent(monkeypatch: pytest.MonkeyPatch, install_pynvml: Installer,
                                                   install_amdsmi: Installer) -> None:
    install_pynvml.missing()
    install_amdsmi.missing()
    calls: list[float | None] = []
    real = psutil.cpu_percent

    def spy(interval: float | None = None, percpu: bool = False) -> Any:
        calls.append(interval)
        return real(interval=None, percpu=percpu)  # type: ignore[call-overload]  # passes the flag through

    monkeypatch.setattr(psutil, "cpu_percent", spy)
    mon = HostResourceMonitor(cpu_sampler=CpuLoadSampler(interval=0.02))
    with mon:
        for _ in range(20):
            mon.snapshot()
        deadline = time.monotonic() + 5
        while mon.snapshot().cpu_load_percent is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(calls) >= 2, "the sampler thread did the measuring"
    assert all(interval is None for interval in calls), calls


def test_one_backend_per_vendor() -> None:
    with pytest.raises(ValueError, match="one backend per vendor"):
        HostResourceMonitor(backends=(NvidiaBackend(), NvidiaBackend()), cpu_sampler=FixedSampler(0.0))


def test_real_host_snapshot_smoke() -> None:
    """Against this machine's real psutil, with whatever vendor packages are (not) installed."""
    with HostResourceMonitor() as mon:
        snap = mon.snapshot()
    assert snap.cpu_cores_total >= 1
    assert 0 < snap.ram_available_bytes <= snap.ram_total_bytes
    assert {s.vendor for s in snap.vendors} == {"nvidia", "amd"}
