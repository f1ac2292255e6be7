# SPDX-License-Identifier: AGPL-3.0-or-later
"""The `/srv/host/resources` and `/srv/resources/available/` shapes promised in contract.md."""

from __future__ import annotations

import json

import pytest

from ozwald.resources import (
    GpuInfo,
    GpuProcess,
    HostSnapshot,
    VendorStatus,
    available_resources_view,
    host_resources_view,
    vram_resource_name,
)

GiB = 1024**3
CONTRACT_HOST_KEYS = {
    "total_cpu_cores",
    "available_cpu_cores",
    "total_ram_gb",
    "available_ram_gb",
    "total_vram_gb",
    "available_vram_gb",
    "total_gpus",
    "available_gpus",
    "gpus",
}
CONTRACT_GPU_KEYS = {"id", "total_vram", "available_vram", "description", "pci_device_description"}
CONTRACT_RESOURCE_KEYS = {"name", "type", "unit", "value", "related_resources", "extended_attributes"}


def snapshot() -> HostSnapshot:
    h100 = GpuInfo(
        "nvidia",
        0,
        uuid="GPU-aaaa",
        name="NVIDIA H100 80GB HBM3",
        pci_bus_id="0000:01:00.0",
        pci_description="NVIDIA Corporation GH100 [H100 SXM5 80GB]",
        vram_total_mib=81920,
        vram_free_mib=61440,
        vram_used_mib=20480,
        utilization_percent=30.0,
        processes=(GpuProcess(4242, 20000),),
    )
    mi300 = GpuInfo(
        "amd",
        0,
        uuid="amd-0",
        name="AMD Instinct MI300X",
        pci_bus_id="0000:c1:00.0",
        vram_total_mib=196608,
        vram_free_mib=196608,
        vram_used_mib=0,
    )
    lost = GpuInfo("nvidia", 1, uuid="GPU-bbbb", errors=("memory: NVMLError_GpuIsLost: GPU is lost",))
    return HostSnapshot(
        taken_at=1.0,
        cpu_cores_total=32,
        cpu_load_percent=50.0,
        cpu_cores_available=16.0,
        ram_total_bytes=256 * GiB,
        ram_available_bytes=200 * GiB,
        gpus=(h100, lost, mi300),
        vendors=(
            VendorStatus("nvidia", True, driver_version="550.54.15"),
            VendorStatus("amd", True, driver_version="6.10.5"),
        ),
    )


def test_host_resources_contract_fields() -> None:
    body = host_resources_view(snapshot())
    assert body.keys() >= CONTRACT_HOST_KEYS
    assert body["total_cpu_cores"] == 32
    assert body["available_cpu_cores"] == 16.0
    assert body["total_ram_gb"] == 256.0
    assert body["available_ram_gb"] == 200.0
    assert body["total_vram_gb"] == round((81920 + 196608) / 1024, 2)
    assert body["available_vram_gb"] == round((61440 + 196608) / 1024, 2)
    assert body["total_gpus"] == 3
    assert body["available_gpus"] == ["nvidia:0", "amd:0"], "a GPU with unknown VRAM is not offered"
    gpus = {gpu["id"]: gpu for gpu in body["gpus"]}
    for gpu in body["gpus"]:
        assert gpu.keys() >= CONTRACT_GPU_KEYS
        assert {"vendor", "uuid", "cdi_name", "index"} <= gpu.keys()
    h100 = gpus["nvidia:0"]
    assert (h100["total_vram"], h100["available_vram"]) == (81920, 61440)  # MiB
    assert h100["description"] == "NVIDIA H100 80GB HBM3"
    assert h100["pci_device_description"] == "NVIDIA Corporation GH100 [H100 SXM5 80GB]"
    assert (h100["vendor"], h100["uuid"], h100["cdi_name"], h100["index"]) == (
        "nvidia",
        "GPU-aaaa",
        "nvidia.com/gpu=0",
        0,
    )
    assert gpus["amd:0"]["cdi_name"] == "amd.com/gpu=0"
    assert gpus["amd:0"]["pci_device_description"] == "0000:c1:00.0", "falls back to the address"
    assert gpus["nvidia:1"]["errors"] == ["memory: NVMLError_GpuIsLost: GPU is lost"]
    assert gpus["nvidia:1"]["available_vram"] == 0
    assert body["vendors"]["nvidia"] == {"available": True, "reason": None, "driver_version": "550.54.15"}
    json.dumps(body)


def test_available_resources_contract_fields() -> None:
    body = available_resources_view(snapshot())
    json.dumps(body)
    for entry in body:
        assert set(entry) == CONTRACT_RESOURCE_KEYS
        assert entry["type"] in {"cpu", "memory", "gpu", "vram"}
        assert isinstance(entry["related_resources"], list)
        assert isinstance(entry["extended_attributes"], dict)
    by_name = {entry["name"]: entry for entry in body}
    assert len(by_name) == len(body), "names are unique"
    assert by_name["cpu"]["value"] == 16.0 and by_name["cpu"]["unit"] == "cores"
    assert by_name["memory"]["value"] == 200.0 and by_name["memory"]["unit"] == "GB"
    assert by_name["nvidia:0"]["type"] == "gpu" and by_name["nvidia:0"]["value"] == 1.0
    assert by_name["nvidia:0"]["related_resources"] == ["vram:nvidia:0"]
    assert by_name["nvidia:0"]["extended_attributes"]["cdi_name"] == "nvidia.com/gpu=0"
    assert by_name["nvidia:0"]["extended_attributes"]["processes"] == [{"pid": 4242, "used_vram_mib": 20000}]
    assert by_name["vram:nvidia:0"] == {
        "name": "vram:nvidia:0",
        "type": "vram",
        "unit": "MiB",
        "value": 61440,
        "related_resources": ["nvidia:0"],
        "extended_attributes": {"total": 81920, "used": 20480, "free": 61440},
    }
    assert by_name["nvidia:1"]["value"] == 0.0 and by_name["vram:nvidia:1"]["value"] == 0
    assert by_name["vram:amd:0"]["value"] == 196608


def test_reservations_are_subtracted_and_clamped() -> None:
    reservations = {
        "cpu": 4,
        "memory": 50,
        vram_resource_name("nvidia:0"): 60000,
        vram_resource_name("amd:0"): 999999,  # more than exists: clamps at 0
        "amd:0": 1,  # whole device taken
        "nvidia:9": 1,  # a GPU that is gone: ignored
    }
    body = host_resources_view(snapshot(), reservations)
    assert body["available_cpu_cores"] == 12.0
    assert body["available_ram_gb"] == 150.0
    gpus = {gpu["id"]: gpu for gpu in body["gpus"]}
    assert gpus["nvidia:0"]["available_vram"] == 1440
    assert gpus["amd:0"]["available_vram"] == 0
    assert body["available_gpus"] == ["nvidia:0"]
    assert body["available_vram_gb"] == round(1440 / 1024, 2)
    available = {entry["name"]: entry["value"] for entry in available_resources_view(snapshot(), reservations)}
    assert available["cpu"] == 12.0
    assert available["memory"] == 150.0
    assert available["vram:nvidia:0"] == 1440
    assert available["amd:0"] == 0.0
    assert available["vram:amd:0"] == 0


def test_no_reservations_equals_empty_reservations() -> None:
    assert host_resources_view(snapshot()) == host_resources_view(snapshot(), {})
    assert available_resources_view(snapshot()) == available_resources_view(snapshot(), {})


def test_negative_reservations_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        available_resources_view(snapshot(), {"cpu": -1})


def test_cpu_only_host_shape() -> None:
    snap = HostSnapshot(0.0, 4, None, 4.0, 8 * GiB, 6 * GiB, vendors=(VendorStatus("nvidia", False, "not installed"),))
    body = host_resources_view(snap)
    assert body["total_gpus"] == 0 and body["gpus"] == [] and body["available_gpus"] == []
    assert body["total_vram_gb"] == 0.0 and body["available_vram_gb"] == 0.0
    assert [entry["name"] for entry in available_resources_view(snap)] == ["cpu", "memory"]
