# SPDX-License-Identifier: AGPL-3.0-or-later
"""Human-readable PCI device descriptions for `pci_device_description`.

The vendor libraries give a marketing name ("NVIDIA H100 80GB HBM3"); orchestrators written against
the predecessor also expect the `lspci`-style vendor/device string. It is derived from sysfs ids
and the system's pci.ids database, without running lspci, and cached per bus id because the
answer cannot change while the device exists.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SYSFS_PCI_DEVICES = Path("/sys/bus/pci/devices")
PCI_IDS_PATHS: tuple[Path, ...] = (
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/pci.ids"),
)
# Enough to say whose card it is when pci.ids is not installed (minimal container images).
_KNOWN_VENDORS = {"10de": "NVIDIA Corporation", "1002": "Advanced Micro Devices, Inc. [AMD/ATI]"}


def normalize_bus_id(bus_id: str) -> str:
    """One spelling for a PCI address across vendors.

    NVML reports an 8-digit domain ("00000000:01:00.0"), amdsmi and sysfs a 4-digit one
    ("0000:01:00.0"); sysfs paths and equality checks need the latter, in lower case.
    """
    text = bus_id.strip().lower()
    domain, sep, rest = text.partition(":")
    if not sep or not rest:
        return text
    if rest.count(":") == 0:  # "bus:dev.fn" without a domain
        return f"0000:{text}"
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return text


def _read_id(path: Path) -> str | None:
    try:
        raw = path.read_text(encoding="ascii").strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    return raw.removeprefix("0x") or None


def _lookup(ids_paths: Sequence[Path], vendor_id: str, device_id: str) -> tuple[str | None, str | None]:
    for path in ids_paths:
        try:
            handle = path.open(encoding="utf-8", errors="replace")
        except OSError:
            continue
        vendor_name: str | None = None
        with handle:
            for line in handle:
                if not line.strip() or line.startswith("#"):
                    continue
                if not line.startswith("\t"):
                    if vendor_name is not None:
                        break  # left this vendor's block without finding the device
                    if line[:4].lower() == vendor_id:
                        vendor_name = line[4:].strip()
                elif vendor_name is not None and not line.startswith("\t\t") and line[1:5].lower() == device_id:
                    return vendor_name, line[5:].strip()
        if vendor_name is not None:
            return vendor_name, None
    return None, None


@functools.lru_cache(maxsize=64)
def _describe_cached(bus_id: str, sysfs_root: Path, ids_paths: tuple[Path, ...]) -> str | None:
    device_dir = sysfs_root / bus_id
    vendor_id = _read_id(device_dir / "vendor")
    device_id = _read_id(device_dir / "device")
    if vendor_id is None or device_id is None:
        return None
    vendor_name, device_name = _lookup(ids_paths, vendor_id, device_id)
    vendor_name = vendor_name or _KNOWN_VENDORS.get(vendor_id) or f"vendor {vendor_id}"
    if device_name:
        return f"{vendor_name} {device_name}"
    return f"{vendor_name} device {device_id}"


def describe_pci_device(
    bus_id: str,
    *,
    sysfs_root: Path = SYSFS_PCI_DEVICES,
    ids_paths: Sequence[Path] = PCI_IDS_PATHS,
) -> str | None:
    """`"<vendor> <device>"` as lspci prints it, or None when sysfs does not know the address."""
    try:
        return _describe_cached(normalize_bus_id(bus_id), sysfs_root, tuple(ids_paths))
    except Exception:  # a description is cosmetic; never let it break GPU detection
        log.exception("could not describe PCI device %s", bus_id)
        return None
