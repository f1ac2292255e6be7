# SPDX-License-Identifier: AGPL-3.0-or-later
"""Mapping CDI device names to the detected GPUs they hand to a container."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ozwald.resources import GpuInfo, gpus_for_cdi_device, gpus_for_cdi_devices, parse_cdi_device_name

GPUS = (
    GpuInfo("nvidia", 0, uuid="GPU-aaaa-0000"),
    GpuInfo("nvidia", 1, uuid="GPU-bbbb-1111"),
    GpuInfo("amd", 0, uuid="amd-uuid-0"),
    GpuInfo("amd", 1, uuid="amd-uuid-1"),
)


def ids(gpus: Iterable[GpuInfo]) -> list[str]:
    return [gpu.id for gpu in gpus]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nvidia.com/gpu=all", ["nvidia:0", "nvidia:1"]),
        ("nvidia.com/gpu=0", ["nvidia:0"]),
        ("nvidia.com/gpu=1", ["nvidia:1"]),
        ("nvidia.com/gpu=GPU-bbbb-1111", ["nvidia:1"]),
        ("nvidia.com/gpu=gpu-BBBB-1111", ["nvidia:1"]),
        ("nvidia.com/gpu=gpu0", ["nvidia:0"]),  # nvidia-ctk 1.12 names
        ("nvidia.com/gpu=1:0", ["nvidia:1"]),  # a MIG slice counts against its parent
        ("nvidia.com/gpu=7", []),
        ("nvidia.com/gpu=MIG-1234", []),
        ("amd.com/gpu=all", ["amd:0", "amd:1"]),
        ("amd.com/gpu=1", ["amd:1"]),
        ("amd.com/gpu=amd-uuid-0", ["amd:0"]),
        ("amd.com/gpu=gpu0", []),  # not an AMD spelling
        ("intel.com/gpu=0", []),
        ("vendor.com/device=all", []),
        ("/dev/fuse", []),  # host device paths sit next to CDI names in `devices`
        ("/dev/dri/renderD128:/dev/dri/renderD128:rw", []),
    ],
)
def test_mapping(name: str, expected: list[str]) -> None:
    assert ids(gpus_for_cdi_device(name, GPUS)) == expected


def test_vendor_prefix_keeps_index_zero_apart() -> None:
    assert ids(gpus_for_cdi_device("nvidia.com/gpu=0", GPUS)) == ["nvidia:0"]
    assert ids(gpus_for_cdi_device("amd.com/gpu=0", GPUS)) == ["amd:0"]


def test_every_gpu_is_selected_by_its_own_cdi_names() -> None:
    for gpu in GPUS:
        for name in gpu.cdi_names:
            assert ids(gpus_for_cdi_device(name, GPUS)) == [gpu.id], name


@pytest.mark.parametrize("name", ["", "nvidia.com/gpu", "nvidia.com/gpu=", "gpu=0", "=0", "nvidia.com/=0"])
def test_malformed_names_raise(name: str) -> None:
    with pytest.raises(ValueError, match="CDI"):
        gpus_for_cdi_device(name, GPUS)


def test_parse() -> None:
    parsed = parse_cdi_device_name(" nvidia.com/gpu=GPU-1 ")
    assert (parsed.kind, parsed.device, str(parsed)) == ("nvidia.com/gpu", "GPU-1", "nvidia.com/gpu=GPU-1")


def test_union_of_several_names_counts_each_gpu_once_in_snapshot_order() -> None:
    names = ["amd.com/gpu=1", "nvidia.com/gpu=GPU-aaaa-0000", "nvidia.com/gpu=0", "amd.com/gpu=all"]
    assert ids(gpus_for_cdi_devices(names, GPUS)) == ["nvidia:0", "amd:0", "amd:1"]


def test_accepts_a_generator_of_gpus() -> None:
    assert ids(gpus_for_cdi_devices(["nvidia.com/gpu=1"], (g for g in GPUS))) == ["nvidia:1"]
