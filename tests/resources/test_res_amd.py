# SPDX-License-Identifier: AGPL-3.0-or-later
"""AMD detection through a stand-in amdsmi, including the KeyError amdsmi 7.0.2 raises at import."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ozwald_fake_amdsmi as fake
import pytest

from ozwald.resources import AmdBackend, GpuProcess
from tests.resources.conftest import Describer, Installer

MiB = 1024 * 1024


def backend(no_pci_sysfs: Describer, **options: Any) -> AmdBackend:
    return AmdBackend(describe_pci=no_pci_sysfs, **options)


def test_not_installed(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    install_amdsmi.missing()
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert "amdsmi is not installed" in (status.reason or "")


def test_keyerror_at_import_without_rocm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         isolated_import: Callable[[str], None], no_pci_sysfs: Describer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for relative, text in fake.KEYERROR_PACKAGE.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    isolated_import("amdsmi")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyError):  # the premise: this really is what importing it does
        __import__("amdsmi")
    isolated_import("amdsmi")
    reading = backend(no_pci_sysfs).read()  # the production loader, a real import
    assert reading.gpus == ()
    assert reading.status.available is False
    assert "libamd_smi.so could not be loaded" in (reading.status.reason or "")
    assert "KeyError" in (reading.status.reason or "")


def test_oserror_at_import_is_handled_like_keyerror(no_pci_sysfs: Describer) -> None:
    def loader() -> Any:
        raise OSError("libamd_smi.so: cannot open shared object file")

    status = AmdBackend(loader, describe_pci=no_pci_sysfs).read().status
    assert status.available is False
    assert "libamd_smi.so could not be loaded" in (status.reason or "")


def test_init_failure_without_driver(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    install_amdsmi(fake.FakeAmdSmi([fake.FakeAmdGpu()], init_error=fake.AMDSMI_STATUS_INIT_ERROR))
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert "amdsmi_init failed" in (status.reason or "")
    assert "AMDSMI_STATUS_INIT_ERROR" in (status.reason or "")


def test_zero_gpus(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    smi = fake.FakeAmdSmi([])
    install_amdsmi(smi)
    status = backend(no_pci_sysfs).read().status
    assert status.available is False
    assert status.reason == "no AMD GPUs found"
    assert smi.initialised is False, "a failed open must shut the library down again"


def test_one_gpu_fields(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    gpu = fake.FakeAmdGpu(vram_total_mb=196592, vram_used_mb=4096, gfx_activity=55, processes=[(321, 2048 * MiB)])
    install_amdsmi(fake.FakeAmdSmi([gpu]))
    reading = backend(no_pci_sysfs).read()
    assert reading.status.available is True
    assert reading.status.driver_version == "6.10.5"
    (info,) = reading.gpus
    assert info.id == "amd:0"
    assert info.name == "AMD Instinct MI300X"
    assert info.uuid == gpu.uuid
    assert info.pci_bus_id == "0000:c1:00.0"
    assert (info.vram_total_mib, info.vram_used_mib, info.vram_free_mib) == (196592, 4096, 196592 - 4096)
    assert info.utilization_percent == 55.0
    assert info.processes == (GpuProcess(321, 2048),)
    assert info.cdi_name == "amd.com/gpu=0"
    assert info.cdi_uuid_name is None, "the ROCm CDI spec has no UUID names"
    assert info.errors == ()


def test_na_activity_is_unknown_not_zero(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    install_amdsmi(fake.FakeAmdSmi([fake.FakeAmdGpu(gfx_activity="N/A")]))
    (info,) = backend(no_pci_sysfs).read().gpus
    assert info.utilization_percent is None
    assert info.usable


def test_indices_follow_pci_order_like_the_cdi_spec(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    # amdsmi enumerates c1 before 03 here; the ROCm toolkit numbers by sorted PCI address.
    gpus = [
        fake.FakeAmdGpu(uuid="second", bdf="0000:c1:00.0"),
        fake.FakeAmdGpu(uuid="first", bdf="0000:03:00.0"),
    ]
    install_amdsmi(fake.FakeAmdSmi(gpus))
    infos = backend(no_pci_sysfs).read().gpus
    assert [(g.id, g.uuid) for g in infos] == [("amd:0", "first"), ("amd:1", "second")]


def test_error_in_the_middle_degrades_only_that_gpu(install_amdsmi: Installer, no_pci_sysfs: Describer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    bad = fake.FakeAmdGpu(
        uuid="bad",
        bdf="0000:43:00.0",
        failures={
            "amdsmi_get_gpu_vram_usage": fake.AMDSMI_STATUS_DRM_ERROR,
            "amdsmi_get_gpu_memory_total": fake.AMDSMI_STATUS_DRM_ERROR,
        },
    )
    install_amdsmi(fake.FakeAmdSmi([fake.FakeAmdGpu(uuid="ok", bdf="0000:03:00.0"), bad]))
    with caplog.at_level(logging.WARNING, logger="ozwald.resources"):
        reading = backend(no_pci_sysfs).read()
    ok, degraded = reading.gpus
    assert ok.usable and ok.errors == ()
    assert not degraded.usable
    assert degraded.uuid == "bad"
    assert any(e.startswith("memory: AmdSmiLibraryException") for e in degraded.errors)
    assert any(e.startswith("memory.total:") for e in degraded.errors)
    assert "AMDSMI_STATUS_DRM_ERROR" in caplog.text


def test_vram_falls_back_to_byte_counters(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    gpu = fake.FakeAmdGpu(
        vram_total_mb=16384, vram_used_mb=1000, failures={"amdsmi_get_gpu_vram_usage": fake.AMDSMI_STATUS_NOT_SUPPORTED}
    )
    install_amdsmi(fake.FakeAmdSmi([gpu]))
    (info,) = backend(no_pci_sysfs).read().gpus
    assert (info.vram_total_mib, info.vram_used_mib, info.vram_free_mib) == (16384, 1000, 15384)
    assert info.errors == (), "the fallback answered, so nothing is missing"


def test_legacy_process_handles(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    gpu = fake.FakeAmdGpu(processes=[(11, 100 * MiB), (12, 0)])
    install_amdsmi(fake.FakeAmdSmi([gpu], legacy_process_handles=True))
    (info,) = backend(no_pci_sysfs).read().gpus
    assert info.processes == (GpuProcess(11, 100), GpuProcess(12, 0))


def test_initialises_once(install_amdsmi: Installer, no_pci_sysfs: Describer) -> None:
    smi = fake.FakeAmdSmi([fake.FakeAmdGpu(), fake.FakeAmdGpu(uuid="2", bdf="0000:c2:00.0")])
    install_amdsmi(smi)
    amd = backend(no_pci_sysfs)
    for _ in range(3):
        assert len(amd.read().gpus) == 2
    assert smi.calls["amdsmi_init"] == 1
    assert smi.calls["amdsmi_get_processor_handles"] == 1
    assert smi.calls["amdsmi_get_gpu_asic_info"] == 2
    assert smi.calls["amdsmi_get_gpu_vram_usage"] == 6
    amd.close()
    assert smi.initialised is False
