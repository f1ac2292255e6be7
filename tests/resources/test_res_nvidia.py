# SPDX-License-Identifier: AGPL-3.0-or-later
"""NVIDIA detection through a stand-in pynvml: every way NVML fails must degrade, not raise."""

from __future__ import annotations

import logging
from typing import Any

import ozwald_fake_pynvml as fake
import pytest

from ozwald.resources import GpuProcess, NvidiaBackend
from tests.resources.conftest import Describer, Installer

GiB = fake.GiB
MiB = fake.MiB


def backend(no_pci_sysfs: Describer, **options: Any) -> NvidiaBackend:
    return NvidiaBackend(describe_pci=no_pci_sysfs, **options)


def test_not_installed_is_unavailable_with_reason(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    install_pynvml.missing()
    reading = backend(no_pci_sysfs).read()
    assert reading.gpus == ()
    assert reading.status.available is False
    assert "nvidia-ml-py is not installed" in (reading.status.reason or "")


def test_library_present_but_no_driver_library(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    nvml = fake.FakeNvml([fake.FakeNvidiaGpu()], init_error=fake.NVML_ERROR_LIBRARY_NOT_FOUND)
    install_pynvml(nvml)
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert "libnvidia-ml.so.1 not found" in (status.reason or "")


def test_driver_not_loaded(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu()], init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED))
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert "kernel driver is not loaded" in (status.reason or "")


def test_other_init_error_keeps_nvml_message(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu()], init_error=fake.NVML_ERROR_UNKNOWN))
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert "NVMLError_Unknown" in (status.reason or "") and "Unknown Error" in (status.reason or "")


def test_zero_gpus_is_unavailable_but_reports_driver(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    nvml = fake.FakeNvml([])
    install_pynvml(nvml)
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert status.reason == "no NVIDIA GPUs found"
    assert status.driver_version == "550.54.15"
    assert nvml.refcount == 0, "a failed open must balance nvmlInit with nvmlShutdown"


def test_one_gpu_fields(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    gpu = fake.FakeNvidiaGpu(
        total_bytes=80 * GiB,
        used_bytes=10 * GiB + 512 * MiB,
        utilization=42,
        compute_processes=[(4242, 9 * GiB), (77, None)],
        graphics_processes=[(4242, None)],
    )
    install_pynvml(fake.FakeNvml([gpu]))
    reading = backend(no_pci_sysfs).read()
    assert reading.status.available is True
    assert reading.status.driver_version == "550.54.15"
    (info,) = reading.gpus
    assert info.id == "nvidia:0"
    assert info.index == 0
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.uuid == gpu.uuid
    assert info.pci_bus_id == "0000:01:00.0"  # NVML's 8-digit domain normalised
    assert info.vram_total_mib == 81920
    assert info.vram_used_mib == 10752
    assert info.vram_free_mib == 81920 - 10752
    assert info.utilization_percent == 42.0
    # listed as compute and graphics: counted once, keeping the known size; None stays unknown, not 0
    assert info.processes == (GpuProcess(77, None), GpuProcess(4242, 9216))
    assert info.cdi_name == "nvidia.com/gpu=0"
    assert info.cdi_uuid_name == f"nvidia.com/gpu={gpu.uuid}"
    assert info.errors == ()
    assert info.usable


def test_legacy_bytes_strings_are_decoded(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu()], legacy_bytes=True))
    reading = backend(no_pci_sysfs).read()
    (info,) = reading.gpus
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.uuid is not None and info.uuid.startswith("GPU-")
    assert info.pci_bus_id == "0000:01:00.0"
    assert reading.status.driver_version == "550.54.15"


def test_two_gpus_have_distinct_ids_and_cdi_names(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    gpus = [
        fake.FakeNvidiaGpu(uuid="GPU-aaaa", bus_id="00000000:01:00.0"),
        fake.FakeNvidiaGpu(uuid="GPU-bbbb", bus_id="00000000:41:00.0", name="NVIDIA L40S", total_bytes=48 * GiB),
    ]
    install_pynvml(fake.FakeNvml(gpus))
    infos = backend(no_pci_sysfs).read().gpus
    assert [g.id for g in infos] == ["nvidia:0", "nvidia:1"]
    assert [g.cdi_name for g in infos] == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert infos[1].name == "NVIDIA L40S"
    assert infos[1].vram_total_mib == 48 * 1024


def test_error_in_the_middle_degrades_only_that_gpu(install_pynvml: Installer, no_pci_sysfs: Describer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    lost = fake.FakeNvidiaGpu(uuid="GPU-lost", failures={"DeviceGetMemoryInfo": fake.NVML_ERROR_GPU_IS_LOST})
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu(uuid="GPU-ok"), lost, fake.FakeNvidiaGpu(uuid="GPU-ok2")]))
    with caplog.at_level(logging.WARNING, logger="ozwald.resources"):
        reading = backend(no_pci_sysfs).read()
    ok, bad, ok2 = reading.gpus
    assert reading.status.available is True
    assert ok.usable and ok2.usable and ok.errors == () and ok2.errors == ()
    assert bad.vram_total_mib is None and bad.vram_free_mib is None
    assert not bad.usable
    assert bad.uuid == "GPU-lost", "fields that did answer are still reported"
    assert bad.utilization_percent == 7.0
    assert bad.errors == ("memory: NVMLError_GpuIsLost: GPU is lost",)
    assert "GPU is lost" in caplog.text


def test_unsupported_process_query_is_recorded_not_fatal(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    gpu = fake.FakeNvidiaGpu(failures={"DeviceGetComputeRunningProcesses": fake.NVML_ERROR_NOT_SUPPORTED})
    install_pynvml(fake.FakeNvml([gpu]))
    (info,) = backend(no_pci_sysfs).read().gpus
    assert info.usable
    assert info.errors == ("processes.compute: NVMLError_NotSupported: Not Supported",)


def test_handle_failure_reports_the_gpu_degraded(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    bad = fake.FakeNvidiaGpu(failures={"DeviceGetHandleByIndex": fake.NVML_ERROR_NO_PERMISSION})
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu(), bad]))
    reading = backend(no_pci_sysfs).read()
    assert [g.id for g in reading.gpus] == ["nvidia:0", "nvidia:1"]
    assert reading.gpus[0].usable
    assert not reading.gpus[1].usable
    assert reading.gpus[1].errors == ("handle: NVMLError_NoPermission: Insufficient Permissions",)


def test_unexpected_exception_is_logged_with_traceback_and_degrades(install_pynvml: Installer,
                                                                    no_pci_sysfs: Describer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    gpu = fake.FakeNvidiaGpu(crashes={"DeviceGetUtilizationRates": TypeError("binding bug")})
    install_pynvml(fake.FakeNvml([gpu]))
    with caplog.at_level(logging.ERROR, logger="ozwald.resources"):
        (info,) = backend(no_pci_sysfs).read().gpus
    assert info.usable, "memory still read"
    assert info.utilization_percent is None
    assert info.errors == ("utilization: unexpected TypeError: binding bug",)
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert records and records[0].exc_info is not None


def test_repeated_failures_log_once(install_pynvml: Installer, no_pci_sysfs: Describer,
                                    caplog: pytest.LogCaptureFixture) -> None:
    lost = fake.FakeNvidiaGpu(failures={"DeviceGetMemoryInfo": fake.NVML_ERROR_GPU_IS_LOST})
    install_pynvml(fake.FakeNvml([lost]))
    nvidia = backend(no_pci_sysfs)
    with caplog.at_level(logging.WARNING, logger="ozwald.resources"):
        for _ in range(5):
            nvidia.read()
    assert sum("GPU is lost" in r.getMessage() for r in caplog.records) == 1


def test_initialises_once_and_keeps_handles(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    nvml = fake.FakeNvml([fake.FakeNvidiaGpu(), fake.FakeNvidiaGpu(uuid="GPU-2")])
    install_pynvml(nvml)
    nvidia = backend(no_pci_sysfs)
    for _ in range(4):
        assert len(nvidia.read().gpus) == 2
    assert nvml.calls["Init"] == 1
    assert nvml.calls["DeviceGetHandleByIndex"] == 2
    assert nvml.calls["DeviceGetName"] == 2, "identity is read once per GPU, not per snapshot"
    assert nvml.calls["DeviceGetMemoryInfo"] == 8, "live numbers are read every snapshot"


def test_close_shuts_nvml_down(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    nvml = fake.FakeNvml([fake.FakeNvidiaGpu()])
    install_pynvml(nvml)
    nvidia = backend(no_pci_sysfs)
    nvidia.read()
    assert nvml.refcount == 1
    nvidia.close()
    assert nvml.refcount == 0
    assert not nvidia.is_open


def test_init_failure_retried_after_backoff(install_pynvml: Installer, no_pci_sysfs: Describer) -> None:
    now = [1000.0]
    nvml = fake.FakeNvml([fake.FakeNvidiaGpu()], init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED)
    install_pynvml(nvml)
    nvidia = backend(no_pci_sysfs, retry_after=30.0, clock=lambda: now[0])
    assert nvidia.read().status.available is False
    now[0] += 10
    assert nvidia.read().status.available is False
    assert nvml.calls["Init"] == 1, "no retry inside the back-off window"
    nvml.init_error = None  # the driver got loaded
    now[0] += 25
    reading = nvidia.read()
    assert reading.status.available is True
    assert len(reading.gpus) == 1


def test_missing_package_is_not_retried(monkeypatch: pytest.MonkeyPatch, no_pci_sysfs: Describer) -> None:
    calls: list[int] = []

    def loader() -> Any:
        calls.append(1)
        raise ModuleNotFoundError("No module named 'pynvml'", name="pynvml")

    now = [0.0]
    nvidia = NvidiaBackend(loader, describe_pci=no_pci_sysfs, retry_after=1.0, clock=lambda: now[0])
    for _ in range(3):
        now[0] += 100
        assert nvidia.read().status.available is False
    assert calls == [1]


@pytest.mark.parametrize("legacy", [False, True])
def test_pci_description_comes_from_describer(install_pynvml: Installer, legacy: bool) -> None:
    install_pynvml(fake.FakeNvml([fake.FakeNvidiaGpu()], legacy_bytes=legacy))
    seen: list[str] = []

    def describer(bus_id: str) -> str:
        seen.append(bus_id)
        return "NVIDIA Corporation GH100 [H100 SXM5 80GB]"

    (info,) = NvidiaBackend(describe_pci=describer).read().gpus
    assert seen == ["0000:01:00.0"]
    assert info.pci_description == "NVIDIA Corporation GH100 [H100 SXM5 80GB]"
