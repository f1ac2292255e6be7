# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which detected GPUs a CDI device name hands to a container.

Per-GPU VRAM accounting has to know that `--device nvidia.com/gpu=all` takes every NVIDIA card
while `amd.com/gpu=1` takes one AMD card. Names accepted, per vendor toolkit:
- nvidia-ctk: `N` (NVML index), `GPU-<uuid>`, `all`, the legacy `gpuN` of toolkit 1.12, and MIG
  devices `N:M`, which count against their parent GPU N (a MIG UUID cannot be resolved here);
- ROCm container-toolkit: `N` (PCI order) and `all`.
A device part equal to a detected GPU's UUID matches for either vendor. A host device path (`/dev/fuse`,
which the settings accept next to CDI names) selects no GPU.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ozwald.resources.models import CDI_KINDS, GpuInfo, Vendor

log = logging.getLogger(__name__)

CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))

_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NVIDIA_INDEX = re.compile(r"^(?:gpu)?(\d+)(?::\d+)?$")
_PLAIN_INDEX = re.compile(r"^(\d+)$")
_VENDOR_BY_KIND: dict[str, Vendor] = {kind: vendor for vendor, kind in CDI_KINDS.items()}


@dataclass(frozen=True, slots=True)
class CdiDeviceName:
    """A parsed fully-qualified CDI device name, `<vendor>/<class>=<device>`."""

    kind: str
    device: str

    def __str__(self) -> str:
        return f"{self.kind}={self.device}"


def parse_cdi_device_name(name: str) -> CdiDeviceName:
    """Split a fully-qualified CDI name; raises ValueError for anything podman would reject, so a
    typo in a service definition surfaces as a configuration error instead of zero GPUs."""
    kind, sep, device = name.strip().partition("=")
    if not sep or not device or not _KIND.match(kind):
        raise ValueError(f"not a fully-qualified CDI device name (vendor.com/class=device): {name!r}")
    return CdiDeviceName(kind, device)


def _index(vendor: Vendor, device: str) -> int | None:
    match = (_NVIDIA_INDEX if vendor == "nvidia" else _PLAIN_INDEX).match(device)
    return int(match.group(1)) if match else None


def gpus_for_cdi_device(name: str, gpus: Iterable[GpuInfo]) -> tuple[GpuInfo, ...]:
    """The detected GPUs that CDI device `name` selects, in snapshot order.

    Empty when the name is for another kind of device (a `/dev/…` path included) or for a GPU that was not
    detected.
    """
    if name.startswith("/"):  # a host device path: the settings validated it; it is no CDI name
        return ()
    parsed = parse_cdi_device_name(name)
    vendor = _VENDOR_BY_KIND.get(parsed.kind)
    if vendor is None:
        return ()
    candidates = [gpu for gpu in gpus if gpu.vendor == vendor]
    if parsed.device == "all":
        return tuple(candidates)
    wanted = _index(vendor, parsed.device)
    if wanted is not None:
        return tuple(gpu for gpu in candidates if gpu.index == wanted)
    device = parsed.device.lower()
    matched = tuple(gpu for gpu in candidates if gpu.uuid is not None and gpu.uuid.lower() == device)
    if not matched:
        log.debug("CDI device %s matches no detected GPU", name)
    return matched


def gpus_for_cdi_devices(names: Iterable[str], gpus: Iterable[GpuInfo]) -> tuple[GpuInfo, ...]:
    """The union over several `--device` names, each GPU once, in snapshot order."""
    detected = tuple(gpus)
    selected = {gpu.id for name in names for gpu in gpus_for_cdi_device(name, detected)}
    return tuple(gpu for gpu in detected if gpu.id in selected)


def cdi_device_names(directories: Iterable[Path] = CDI_DIRS) -> tuple[set[str], list[str]]:
    """Fully-qualified device names the CDI specs on this host provide, and the files that failed to parse."""
    names: set[str] = set()
    broken: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
                spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
                kind = spec["kind"]
                names.update(f"{kind}={device['name']}" for device in spec.get("devices") or [])
            except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError) as exc:
                broken.append(f"{path}: {exc}")
    return names, broken
