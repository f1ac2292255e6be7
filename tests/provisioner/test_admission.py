# SPDX-License-Identifier: AGPL-3.0-or-later
"""Admission, placement and variety choice, on host snapshots built from the real records."""

import pytest

from ozwald.config import parse_settings
from ozwald.provisioner.admission import assess, place, reservations
from ozwald.provisioner.requests import HostCapabilities, validate_requests
from ozwald.records import DesiredInstance, ServiceRequest, UpdateError
from ozwald.resources import HostSnapshot
from ozwald.resources.models import GpuInfo, Vendor

GIB = 1024**3
SETTINGS = parse_settings("""\
services:
  - name: llm
    image: x
    varieties:
      nvidia: {resources: {vram_gb: 30, gpus: 1}}
      amdgpu: {resources: {vram_gb: 30}}
      cpu-only: {resources: {memory_gb: 8}}
  - name: big
    image: x
    varieties:
      nvidia: {resources: {vram_gb: 70}}
  - name: pinned
    image: x
    varieties:
      gpu1: {devices: ["nvidia.com/gpu=1"], resources: {vram_gb: 50}}
  - name: ram
    image: x
    resources: {memory_gb: 20, cpus: 3}
""")


def gpu(vendor: Vendor, index: int, total_gib: int, uuid: str | None = None) -> GpuInfo:
    return GpuInfo(vendor=vendor, index=index, uuid=uuid or f"GPU-{vendor}-{index}", name=f"{vendor} {index}",
                   vram_total_mib=total_gib * 1024, vram_free_mib=total_gib * 1024, vram_used_mib=0)


def snapshot(*gpus: GpuInfo, ram_gib: int = 32, cores: int = 4) -> HostSnapshot:
    return HostSnapshot(taken_at=0.0, cpu_cores_total=cores, cpu_load_percent=None, cpu_cores_available=cores,
                        ram_total_bytes=ram_gib * GIB, ram_available_bytes=ram_gib * GIB, gpus=tuple(gpus),
                        vendors=())


TWO_NVIDIA = snapshot(gpu("nvidia", 0, 80), gpu("nvidia", 1, 80))


def inst(name: str, service: str, variety: str | None = None) -> DesiredInstance:
    return DesiredInstance(name=name, service=service, variety=variety)


def test_single_gpu_services_are_pinned_by_uuid_to_the_emptiest_gpu() -> None:
    placed = place(SETTINGS, [inst("a", "pinned", "gpu1"), inst("b", "llm", "nvidia"), inst("c", "llm", "nvidia")],
                   TWO_NVIDIA)
    devices = {i.name: i.devices for i in placed}
    assert devices["a"] is None  # already pinned by its variety
    assert devices["b"] == ("nvidia.com/gpu=GPU-nvidia-0",)  # gpu 1 has 50 GB declared, gpu 0 none
    assert devices["c"] == ("nvidia.com/gpu=GPU-nvidia-0",)  # gpu 0: 50 left, gpu 1: 30 left
    fit = assess(SETTINGS, placed, TWO_NVIDIA)
    assert fit.conflicts == []
    assert fit.vram_mib == {"nvidia:1": {"a": 51200}, "nvidia:0": {"b": 30720, "c": 30720}}


ONE_GPU_HOST = parse_settings("""\
services:
  - name: llm
    image: x
    varieties:
      nvidia: {resources: {vram_gb: 30, gpus: 1}}
      fuse: {devices: ["/dev/fuse", "nvidia.com/gpu=all"], resources: {vram_gb: 30, gpus: 1}}
      gpu0: {devices: ["nvidia.com/gpu=0"], resources: {gpus: 1}}
""")


def test_a_host_with_one_gpu_pins_by_uuid_too() -> None:
    # `all` gives every GPU, one here: pinned, so a GPU added to the host later is not handed to it as well.
    host = snapshot(gpu("nvidia", 0, 80))
    placed = place(ONE_GPU_HOST, [inst("a", "llm", "nvidia"), inst("b", "llm", "gpu0")], host)
    assert [i.devices for i in placed] == [("nvidia.com/gpu=GPU-nvidia-0",), None]  # a GPU named by index stays


def test_pinning_keeps_the_devices_that_are_no_gpu() -> None:
    for host in (snapshot(gpu("nvidia", 0, 80)), TWO_NVIDIA):
        placed = place(ONE_GPU_HOST, [inst("a", "llm", "fuse")], host)
        assert placed[0].devices == ("/dev/fuse", "nvidia.com/gpu=GPU-nvidia-0")
        fit = assess(ONE_GPU_HOST, placed, host)
        assert fit.conflicts == [] and fit.gpus == {"a": ("nvidia:0",)}


def test_existing_pins_are_kept() -> None:
    pinned = DesiredInstance(name="b", service="llm", variety="nvidia", devices=("nvidia.com/gpu=GPU-nvidia-1",))
    assert place(SETTINGS, [pinned], TWO_NVIDIA)[0].devices == ("nvidia.com/gpu=GPU-nvidia-1",)


def test_vram_per_gpu_that_does_not_fit_names_gpu_and_shortfall() -> None:
    fit = assess(SETTINGS, [inst("big1", "big", "nvidia"), inst("big2", "big", "nvidia")], TWO_NVIDIA)
    described = sorted(c.describe() for c in fit.conflicts)
    assert described == [
        "vram:nvidia:0: big1, big2 need 140 GB, the host has 80 (short by 60 GB)",
        "vram:nvidia:1: big1, big2 need 140 GB, the host has 80 (short by 60 GB)",
    ]


def test_ram_cpu_and_gpu_count() -> None:
    fit = assess(SETTINGS, [inst("r1", "ram"), inst("r2", "ram")], snapshot(ram_gib=32, cores=4))
    assert sorted(c.resource for c in fit.conflicts) == ["cpu", "memory"]
    memory = next(c for c in fit.conflicts if c.resource == "memory")
    assert (memory.needed, memory.capacity, memory.short_by) == (40, 32, 8)
    no_gpu = assess(SETTINGS, [inst("g", "llm", "nvidia")], snapshot())
    assert sorted(c.resource for c in no_gpu.conflicts) == ["gpus", "vram"]


def test_reservations_use_the_view_names() -> None:
    fit = assess(SETTINGS, [inst("a", "pinned", "gpu1"), inst("r", "ram")], TWO_NVIDIA)
    assert reservations(fit) == {"memory": 20, "cpu": 3, "vram:nvidia:1": 51200}


@pytest.mark.parametrize("host,expected", [
    (HostCapabilities(frozenset({"nvidia"}), frozenset({"nvidia.com/gpu=all"})), "nvidia"),
    (HostCapabilities(frozenset({"nvidia"}), frozenset()), "cpu-only"),  # GPUs but no CDI spec
    (HostCapabilities(frozenset({"amd"}), frozenset(), has_kfd=True), "amdgpu"),
    (HostCapabilities(frozenset({"amd"}), frozenset()), "cpu-only"),
    (HostCapabilities(), "cpu-only"),
])
def test_variety_auto_selection(host: HostCapabilities, expected: str) -> None:
    [chosen] = validate_requests(SETTINGS, [ServiceRequest(name="llm")], host)
    assert chosen.variety == expected and chosen.variety_auto


def test_no_runnable_variety_explains_each() -> None:
    with pytest.raises(UpdateError) as info:
        validate_requests(SETTINGS, [ServiceRequest(name="big")], HostCapabilities())
    assert info.value.field == "variety"
    assert info.value.message == "no variety of 'big' can run on this host: nvidia (no nvidia GPU on this host)"


MEASURED = parse_settings("""\
services:
  - name: m
    image: x
    varieties:
      nvidia: {resources: {gpus: 1}}
      cpu-only: {}
  - name: declared
    image: x
    resources: {memory_gb: 1}
""")


def test_measured_footprints_stand_in_where_nothing_is_declared_and_the_fit_says_so() -> None:
    from ozwald.provisioner.admission import Footprint

    seen: list[str] = []

    def lookup(instance: DesiredInstance) -> tuple[Footprint | None, str | None]:
        seen.append(instance.name)
        if instance.service == "declared":
            return Footprint(memory_gb=20.0, vram_gb=None, source="measured"), None
        if instance.name == "stale":
            return None, "profiling result of 2026-12-02T16:40:00Z is stale (spec a, now b): not used"
        return Footprint(memory_gb=20.0, vram_gb=50.0, source="measured 2026-12-02T16:40:00Z (spec a)"), None

    host = snapshot(gpu("nvidia", 0, 80), gpu("nvidia", 1, 80), ram_gib=32)
    placed = place(MEASURED, [inst("a", "m", "nvidia"), inst("b", "m", "nvidia")], host, lookup)
    # 50 GB measured each: the second goes to the other GPU.
    assert {i.devices for i in placed} == {("nvidia.com/gpu=GPU-nvidia-0",), ("nvidia.com/gpu=GPU-nvidia-1",)}
    fit = assess(MEASURED, placed, host, lookup)
    assert [c.resource for c in fit.conflicts] == ["memory"]  # 2 × 20 GB measured > 32
    assert fit.footprints["a"] == {"memory": "measured", "vram": "measured",
                                   "measured": "measured 2026-12-02T16:40:00Z (spec a)"}
    # Declared wins; a stale result is not used, and the fit says why.
    fit = assess(MEASURED, [inst("declared", "declared"), inst("stale", "m", "cpu-only")], host, lookup)
    assert fit.conflicts == [] and fit.memory_gb == {"declared": 1}
    assert "declared" in seen and fit.footprints["stale"]["not_used"].endswith("not used")
    assert fit.footprints["stale"]["memory"] == "none"
    # The reserve lowers the RAM admission counts on.
    fit = assess(MEASURED, [inst("declared", "declared")], snapshot(ram_gib=2), None, reserve_memory_gb=1.5)
    assert [(c.resource, c.capacity) for c in fit.conflicts] == [("memory", 0.5)]
