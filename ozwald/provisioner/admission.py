# SPDX-License-Identifier: AGPL-3.0-or-later
"""Admission and GPU placement: will the desired set fit this host, and on which GPUs?

Capacity is the host's total: VRAM per GPU, RAM (less the provisioner's `admission.reserve_memory_gb`),
CPU cores, GPUs. Demand is what each instance of the desired set declares in `resources`; where it declares
no `memory_gb` or `vram_gb`, its measured footprint (the profiling queue's fresh result, plus the margin)
stands in. Declared values win; a result measured under another spec hash (the settings changed) is stale
and never used. `vram_gb` is needed on every GPU the instance's devices give it
(`nvidia.com/gpu=all` → every NVIDIA GPU, `=0` or a UUID → that one). Declared needs are compared with
totals, not with what is free right now, because free memory already counts Ozwald's own running
services; memory used by processes Ozwald does not manage is not subtracted (see `doctor`).

On-demand instances run only while used, so admission checks each alone beside the always-on instances,
never their sum; those that do not fit together swap (`ozwald.provisioner.exclusion`). Always-on instances
keep their reservations and are never stopped to make room.

Placement: an instance that declares `gpus: 1` and whose devices would give it more than one GPU, or every
GPU of a vendor by name (`nvidia.com/gpu=all`, also on a host with one GPU, which may have two tomorrow), is
pinned to the single GPU with the most VRAM left after the other instances, by UUID (`nvidia.com/gpu=GPU-…`),
so a restart, a renumbering or a GPU added to the host never moves it or hands it a second one. The pin
replaces only the devices that give it GPUs; others (`/dev/fuse`) stay. Existing pins are kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ozwald.config import EffectiveSpec, Settings
from ozwald.provisioner.exclusion import SwapRoom, exclusive_pairs
from ozwald.provisioner.requests import effective_spec
from ozwald.records import DesiredInstance
from ozwald.resources import HostSnapshot
from ozwald.resources.cdi import gpus_for_cdi_device, gpus_for_cdi_devices
from ozwald.resources.models import GpuInfo

GIB_MIB = 1024


@dataclass(frozen=True)
class Footprint:
    """A measured footprint (profiling), margin included, for an instance that declares no `resources`."""

    memory_gb: float | None
    vram_gb: float | None  # on each GPU its devices give it: the largest per-GPU peak measured
    source: str  # e.g. "measured 2026-12-02T16:40:00Z (spec 1a2b…), peak 312 MiB + 10 % margin"


# instance → (a usable footprint or None, a note when a result exists but is not used, e.g. stale)
FootprintLookup = Callable[[DesiredInstance], tuple[Footprint | None, str | None]]


def _needs(spec_needs: float | None, measured: float | None) -> tuple[float | None, str]:
    if spec_needs is not None:
        return spec_needs, "declared"
    if measured is not None:
        return measured, "measured"
    return None, "none"


@dataclass(frozen=True)
class Conflict:
    resource: str
    needed: float
    capacity: float
    unit: str
    instances: tuple[str, ...]

    @property
    def short_by(self) -> float:
        return round(self.needed - self.capacity, 2)

    def describe(self) -> str:
        who = ", ".join(self.instances)
        return (f"{self.resource}: {who} need {self.needed:g} {self.unit}, the host has {self.capacity:g} "
                f"(short by {self.short_by:g} {self.unit})")

    def detail(self) -> dict[str, Any]:
        return {"resource": self.resource, "needed": self.needed, "capacity": self.capacity, "unit": self.unit,
                "short_by": self.short_by, "instances": list(self.instances), "message": self.describe()}


@dataclass
class Fit:
    """Per-instance placement and the host-wide sums that admission checked."""

    gpus: dict[str, tuple[str, ...]] = field(default_factory=dict)  # instance → GPU ids its devices give it
    vram_mib: dict[str, dict[str, int]] = field(default_factory=dict)  # GPU id → instance → MiB declared
    memory_gb: dict[str, float] = field(default_factory=dict)
    cpus: dict[str, float] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    # instance → which footprint admission used per resource ("declared", or the measured result and when)
    footprints: dict[str, dict[str, str]] = field(default_factory=dict)
    on_demand: set[str] = field(default_factory=set)  # checked each alone beside the always-on ones
    exclusive_with: dict[str, tuple[str, ...]] = field(default_factory=dict)  # on-demand instance → swaps with

    def at_once(self, users: Mapping[str, float] | Mapping[str, int], alone: str | None = None) -> float:
        """The always-on users' sum plus one on-demand user: `alone`, or else the largest."""
        base = float(sum(v for n, v in users.items() if n not in self.on_demand))
        on_demand = [float(v) for n, v in users.items() if n in self.on_demand and (alone is None or n == alone)]
        return base + max(on_demand, default=0.0)

    def for_instance(self, name: str, snapshot: HostSnapshot) -> dict[str, Any]:
        """What the plan shows per instance: each GPU it gets, with that GPU's total and the sum admission checked
        (the always-on instances, plus this one if it runs on demand, else the largest on-demand one)."""
        out: dict[str, Any] = {}
        for gpu_id in self.gpus.get(name, ()):
            gpu = snapshot.gpu(gpu_id)
            total = gpu.vram_total_mib if gpu is not None else None
            users = self.vram_mib.get(gpu_id, {})
            declared = self.at_once(users, name if name in self.on_demand else None)
            out[gpu_id] = {"vram_needed_mib": self.vram_mib.get(gpu_id, {}).get(name, 0),
                           "vram_declared_total_mib": declared, "vram_total_mib": total,
                           "fits": total is None or declared <= total}
        return out


def _vram_gb(spec_vram: float | None, instance: DesiredInstance, lookup: FootprintLookup | None) -> float:
    if spec_vram is not None or lookup is None:
        return spec_vram or 0.0
    measured, _ = lookup(instance)
    return (measured.vram_gb or 0.0) if measured is not None else 0.0


def _to_pin(spec: EffectiveSpec, taken: Sequence[GpuInfo]) -> bool:
    """`gpus: 1` with devices that give it more than one GPU, or a vendor's every GPU by `=all` (one GPU on
    this host, maybe more after the next maintenance window); a GPU without a UUID cannot be pinned."""
    if spec.resources.gpus != 1 or not taken or not all(g.uuid for g in taken):
        return False
    return len(taken) > 1 or any(d.endswith("=all") and gpus_for_cdi_device(d, taken) for d in spec.devices)


def _pinned_devices(devices: Sequence[str], pin: str, gpus: Sequence[GpuInfo]) -> tuple[str, ...]:
    """`devices` with every name that gives the instance a GPU replaced by `pin`, once; the others kept."""
    out: list[str] = []
    for device in devices:
        keep = device if not gpus_for_cdi_device(device, gpus) else pin
        if keep not in out:
            out.append(keep)
    return tuple(out)


def place(settings: Settings, instances: Sequence[DesiredInstance], snapshot: HostSnapshot,
          lookup: FootprintLookup | None = None) -> list[DesiredInstance]:
    """Pin single-GPU instances to the GPU with the most VRAM left; others are returned unchanged.

    VRAM is the declared `vram_gb`, else the measured footprint (through `lookup`)."""
    left: dict[str, float] = {g.id: float(g.vram_total_mib or 0) for g in snapshot.gpus}
    specs = {i.name: effective_spec(settings, i) for i in instances}
    vram = {i.name: _vram_gb(specs[i.name].resources.vram_gb, i, lookup) for i in instances}
    to_place: list[DesiredInstance] = []
    for instance in instances:
        spec = specs[instance.name]
        taken = gpus_for_cdi_devices(spec.devices, snapshot.gpus) if spec.devices else ()
        if instance.devices is None and _to_pin(spec, taken):
            to_place.append(instance)
            continue
        for gpu in taken:
            left[gpu.id] -= vram[instance.name] * GIB_MIB
    placed: dict[str, DesiredInstance] = {}
    for instance in to_place:
        spec = specs[instance.name]
        candidates = gpus_for_cdi_devices(spec.devices, snapshot.gpus)
        best: GpuInfo = max(candidates, key=lambda g: (left[g.id], -g.index))
        left[best.id] -= vram[instance.name] * GIB_MIB
        kind = best.cdi_name.split("=", 1)[0]
        devices = _pinned_devices(spec.devices, f"{kind}={best.uuid}", snapshot.gpus)
        placed[instance.name] = instance.model_copy(update={"devices": devices})
    return [placed.get(i.name, i) for i in instances]


def assess(settings: Settings, instances: Sequence[DesiredInstance], snapshot: HostSnapshot,
           lookup: FootprintLookup | None = None, reserve_memory_gb: float = 0.0) -> Fit:
    """Declared needs against the host's capacity; where an instance declares no `memory_gb`/`vram_gb`,
    its measured footprint (profiling, through `lookup`) stands in, and `fit.footprints` says which was used.
    RAM capacity is the host's total less `reserve_memory_gb`."""
    fit = Fit()
    ram_total = round(max(0.0, snapshot.ram_total_bytes / 1024**3 - reserve_memory_gb), 2)
    for instance in instances:
        spec = effective_spec(settings, instance)
        if spec.type != "container":
            continue
        needs = spec.resources
        if spec.on_demand is not None:
            fit.on_demand.add(instance.name)
        measured, note = (None, None)
        if lookup is not None and (needs.memory_gb is None or needs.vram_gb is None):
            measured, note = lookup(instance)
        memory_gb, memory_from = _needs(needs.memory_gb, measured.memory_gb if measured else None)
        vram_gb, vram_from = _needs(needs.vram_gb, measured.vram_gb if measured else None)
        sources = {"memory": memory_from, "vram": vram_from}
        if "measured" in sources.values() and measured is not None:
            sources["measured"] = measured.source
        if note:
            sources["not_used"] = note
        if "measured" in sources.values() or note:
            fit.footprints[instance.name] = sources
        taken = gpus_for_cdi_devices(spec.devices, snapshot.gpus) if spec.devices else ()
        fit.gpus[instance.name] = tuple(g.id for g in taken)
        if memory_gb:
            fit.memory_gb[instance.name] = memory_gb
        if needs.cpus:
            fit.cpus[instance.name] = needs.cpus
        if needs.gpus and needs.gpus > len(taken):
            fit.conflicts.append(Conflict("gpus", needs.gpus, len(taken), "GPUs", (instance.name,)))
        if vram_gb:
            if not taken:
                fit.conflicts.append(Conflict("vram", vram_gb, 0, "GB", (instance.name,)))
            for gpu in taken:
                fit.vram_mib.setdefault(gpu.id, {})[instance.name] = int(vram_gb * GIB_MIB)
    room: dict[str, float] = {}
    for gpu_id, users in fit.vram_mib.items():
        found = snapshot.gpu(gpu_id)
        total = (found.vram_total_mib or 0) if found is not None else 0
        room[f"vram:{gpu_id}"] = total - _check(fit, f"vram:{gpu_id}", users, total, GIB_MIB, "GB")
    room["memory"] = ram_total - _check(fit, "memory", fit.memory_gb, ram_total, 1, "GB")
    _check(fit, "cpu", fit.cpus, snapshot.cpu_cores_total, 1, "cores")
    swap_needs = {name: {f"vram:{g}": float(users[name]) for g, users in fit.vram_mib.items() if name in users}
             | ({"memory": fit.memory_gb[name]} if name in fit.memory_gb else {}) for name in sorted(fit.on_demand)}
    fit.exclusive_with = exclusive_pairs(SwapRoom(room, swap_needs))
    return fit


def _check(fit: Fit, resource: str, users: Mapping[str, float] | Mapping[str, int], capacity: float, scale: int,
           unit: str) -> float:
    """Record a conflict when the always-on users plus any one on-demand user need more than `capacity`;
    returns what the always-on users need. `scale` converts the users' amounts into the conflict's unit."""
    always = {n: float(v) for n, v in users.items() if n not in fit.on_demand}
    alone = {n: float(v) for n, v in users.items() if n in fit.on_demand}
    base = sum(always.values())
    over = [n for n, v in alone.items() if base + v > capacity + 1e-9]
    if base > capacity + 1e-9 or over:
        needed = base + max((alone[n] for n in over), default=0.0)
        fit.conflicts.append(Conflict(resource, round(needed / scale, 2), round(capacity / scale, 2), unit,
                                      (*always, *over)))
    return base


def reservations(fit: Fit) -> dict[str, float]:
    """Declared needs in the resource names of `ozwald.resources.views` (for the resource endpoints): the
    always-on instances' sum plus the largest on-demand one, what admission keeps room for."""
    out: dict[str, float] = defaultdict(float)
    out["memory"] = fit.at_once(fit.memory_gb)
    out["cpu"] = fit.at_once(fit.cpus)
    for gpu_id, users in fit.vram_mib.items():
        out[f"vram:{gpu_id}"] = fit.at_once(users)
    return dict(out)
