# SPDX-License-Identifier: AGPL-3.0-or-later
"""PCI addresses and lspci-style descriptions from sysfs + pci.ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from ozwald.resources import describe_pci_device, normalize_bus_id

PCI_IDS = """\
# comment
1002  Advanced Micro Devices, Inc. [AMD/ATI]
\t74a1  Aqua Vanjaram [Instinct MI300X]
10de  NVIDIA Corporation
\t2330  GH100 [H100 SXM5 80GB]
\t\t10de 16c1  H100 SXM5 80GB
\t2331  GH100 [H100 PCIe]
10df  Emulex Corporation
\t9999  Belongs to Emulex, not to NVIDIA
"""


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("00000000:01:00.0", "0000:01:00.0"),
        ("0000:C1:00.0", "0000:c1:00.0"),
        ("00000001:41:00.0", "0001:41:00.0"),
        ("41:00.0", "0000:41:00.0"),
        ("garbage", "garbage"),
    ],
)
def test_normalize_bus_id(raw: str, normalised: str) -> None:
    assert normalize_bus_id(raw) == normalised


@pytest.fixture
def sysfs(tmp_path: Path) -> tuple[Path, Path]:
    def add(bus_id: str, vendor: str, device: str) -> None:
        directory = tmp_path / "devices" / bus_id
        directory.mkdir(parents=True)
        (directory / "vendor").write_text(f"0x{vendor}\n")
        (directory / "device").write_text(f"0x{device}\n")

    add("0000:01:00.0", "10de", "2330")
    add("0000:02:00.0", "10de", "9999")
    add("0000:c1:00.0", "1002", "74a1")
    ids = tmp_path / "pci.ids"
    ids.write_text(PCI_IDS)
    return tmp_path / "devices", ids


def test_describes_from_pci_ids(sysfs: tuple[Path, Path]) -> None:
    root, ids = sysfs
    assert (
        describe_pci_device("00000000:01:00.0", sysfs_root=root, ids_paths=[ids])
        == "NVIDIA Corporation GH100 [H100 SXM5 80GB]"
    )
    assert (
        describe_pci_device("0000:c1:00.0", sysfs_root=root, ids_paths=[ids])
        == "Advanced Micro Devices, Inc. [AMD/ATI] Aqua Vanjaram [Instinct MI300X]"
    )


def test_unknown_device_keeps_vendor(sysfs: tuple[Path, Path]) -> None:
    root, ids = sysfs
    assert describe_pci_device("0000:02:00.0", sysfs_root=root, ids_paths=[ids]) == "NVIDIA Corporation device 9999"


def test_without_pci_ids_uses_builtin_vendor_names(sysfs: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = sysfs
    missing = tmp_path / "nope.ids"
    assert describe_pci_device("0000:01:00.0", sysfs_root=root, ids_paths=[missing]) == "NVIDIA Corporation device 2330"


def test_unknown_address_is_none(sysfs: tuple[Path, Path]) -> None:
    root, ids = sysfs
    assert describe_pci_device("0000:77:00.0", sysfs_root=root, ids_paths=[ids]) is None
