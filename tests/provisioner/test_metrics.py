# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /metrics of a real Provisioner (real Redis, the real NVML wrapper on the stand-in NVML), checked by
parsing the exposition with prometheus_client's parser and by `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ozwald.api.app import RequestCounts
from ozwald.api.metrics import exposition
from ozwald.config import resolve
from ozwald.provisioner.core import Provisioner
from ozwald.provisioner.metrics import SERIES
from ozwald.records import ActiveService, DesiredInstance, ServiceInfo
from ozwald.resources import HostResourceMonitor
from ozwald.resources.nvidia import NvidiaBackend
from ozwald.state import ProfileResult, ProfileResults
from ozwald.state.resp import Client
from tests.support.provisioner_kit import StubReconciler, make_provisioner

FAKES = str(Path(__file__).resolve().parents[1] / "resources" / "fakes")
if FAKES not in sys.path:
    sys.path.insert(0, FAKES)
from ozwald_fake_pynvml import FakeNvidiaGpu, FakeNvml, GiB  # noqa: E402

UUIDS = ["GPU-0a0a0a0a-1111-2222-3333-444444444444", "GPU-0b0b0b0b-1111-2222-3333-444444444444"]
SETTINGS = """\
services:
  - name: llm
    image: localhost/llm
    varieties:
      nvidia: {resources: {vram_gb: 50, gpus: 1}}
      cpu-only: {environment: {GPU: "false"}}
    profiles:
      fast: {environment: {FAST: "1"}}
  - name: embed
    image: localhost/embed
    varieties:
      nvidia: {}
"""
PROCESS_FAMILIES = {"process", "python_info", "python_gc"}  # prometheus_client's own collectors


class _FixedSampler:
    load_percent = 10.0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@pytest.fixture
def core(redis_client: Client, tmp_path: Path) -> Iterator[tuple[Provisioner, StubReconciler]]:
    provisioner, reconciler = make_provisioner(SETTINGS, redis_client, tmp_path)
    nvml = FakeNvml([FakeNvidiaGpu(uuid=uuid, bus_id=f"00000000:0{i + 1}:00.0", total_bytes=80 * GiB,
                                   used_bytes=(i + 1) * GiB) for i, uuid in enumerate(UUIDS)])
    provisioner.resources = HostResourceMonitor(
        backends=(NvidiaBackend(loader=nvml.module, describe_pci=lambda bus: None),),
        cpu_sampler=_FixedSampler(), memory=lambda: (64 * GiB, 32 * GiB), cpu_count=8)  # type: ignore[arg-type]
    provisioner.results = ProfileResults(redis_client, "test", state_dir=tmp_path)
    provisioner.start()
    yield provisioner, reconciler
    provisioner.stop()


def scrape(provisioner: Provisioner, counts: RequestCounts | None = None) -> str:
    body, content_type = exposition(provisioner, counts or RequestCounts(), lambda: 2, 6)()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, series: str, **labels: str) -> float:
    found = samples(text)
    key = (series, frozenset(labels.items()))
    assert key in found, f"{series}{labels} not in the scrape: {[k for k in found if k[0] == series]}"
    return found[key]


def active(name: str, state: str, generation: int, **info: object) -> ActiveService:
    return ActiveService(name=name, service="llm", variety="nvidia", profile="fast", status=state,  # type: ignore[arg-type]
                         info=ServiceInfo.model_validate({"generation": generation, "restarts": 0, **info}))


def test_statuses_restarts_and_failures_of_the_published_statuses(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    reconciler.publish([active("a", "starting", 1, pending={"job": "start"}), active("b", "available", 1)])
    reconciler.publish([active("a", "available", 1, restarts=0), active("b", "starting", 1, restarts=2,
                                                                            restarting=True)])
    reconciler.publish([active("a", "available", 1), active("b", "failed", 1, restarts=5)])
    text = scrape(provisioner)
    labels = {"service": "llm", "variety": "nvidia", "profile": "fast"}
    assert value(text, "ozwald_instance_status", name="a", status="available", **labels) == 1
    assert value(text, "ozwald_instance_status", name="a", status="starting", **labels) == 0
    assert value(text, "ozwald_instance_status", name="b", status="failed", **labels) == 1
    assert value(text, "ozwald_instance_status", name="a", status="idle", **labels) == 0  # a series per status
    assert value(text, "ozwald_instance_restarts_total", name="b", service="llm") == 5
    assert value(text, "ozwald_instance_failures_total", name="b", service="llm") == 1
    assert value(text, "ozwald_instance_failures_total", name="a", service="llm") == 0
    assert value(text, "ozwald_applied_generation") == 1


def test_gpu_memory_total_used_and_reserved_per_gpu(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, _ = core
    provisioner.desired.replace([DesiredInstance(name="llm", service="llm", variety="nvidia",
                                                 devices=(f"nvidia.com/gpu={UUIDS[1]}",))])
    text = scrape(provisioner)
    gpu0 = {"gpu": "nvidia:0", "uuid": UUIDS[0], "vendor": "nvidia"}
    gpu1 = {"gpu": "nvidia:1", "uuid": UUIDS[1], "vendor": "nvidia"}
    assert value(text, "ozwald_gpu_memory_total_bytes", **gpu0) == 80 * GiB
    assert value(text, "ozwald_gpu_memory_used_bytes", **gpu0) == 1 * GiB
    assert value(text, "ozwald_gpu_memory_used_bytes", **gpu1) == 2 * GiB
    assert value(text, "ozwald_gpu_memory_reserved_bytes", **gpu0) == 0
    assert value(text, "ozwald_gpu_memory_reserved_bytes", **gpu1) == 50 * GiB
    assert value(text, "ozwald_desired_generation") == 1
    # a new desired set is seen by the next scrape, not a cached one
    provisioner.desired.replace([])
    assert value(scrape(provisioner), "ozwald_gpu_memory_reserved_bytes", **gpu1) == 0


def test_footprints_say_fresh_or_stale(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, _ = core
    assert provisioner.results is not None
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    current = resolve(provisioner.settings, "llm", "cpu-only", "fast").spec_hash
    provisioner.results.record(ProfileResult(
        service="llm", variety="cpu-only", profile="fast", spec_hash=current, outcome="measured", started_at=now,
        finished_at=now, ready_s=3.5, ram_peak_mib=512.0, vram_peak_mib={"nvidia:0": 100.0, "nvidia:1": 300.0}))
    provisioner.results.record(ProfileResult(
        service="embed", variety="nvidia", spec_hash="0000000000000000", outcome="measured", started_at=now,
        finished_at=now, ram_peak_mib=64.0))
    text = scrape(provisioner)
    llm = {"service": "llm", "variety": "cpu-only", "profile": "fast"}
    embed = {"service": "embed", "variety": "nvidia", "profile": ""}
    assert value(text, "ozwald_footprint_ram_peak_bytes", **llm) == 512 * 1024**2
    assert value(text, "ozwald_footprint_vram_peak_bytes", **llm) == 300 * 1024**2
    assert value(text, "ozwald_footprint_ready_seconds", **llm) == 3.5
    assert value(text, "ozwald_footprint_fresh", **llm) == 1
    assert value(text, "ozwald_footprint_fresh", **embed) == 0
    assert value(text, "ozwald_footprint_measured_timestamp_seconds", **llm) == now.timestamp()


def test_every_catalogued_series_is_exported_and_nothing_else(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    reconciler.passes = 3  # type: ignore[attr-defined]  # what the real reconciler has
    reconciler.last_report = SimpleNamespace(seconds=0.25)  # type: ignore[attr-defined]
    assert provisioner.results is not None
    now = datetime.now(UTC)
    provisioner.results.record(ProfileResult(service="llm", variety="cpu-only", spec_hash="x", outcome="measured",
                                             started_at=now, finished_at=now, ready_s=1.0, ram_peak_mib=1.0,
                                             vram_peak_mib={"nvidia:0": 1.0}))
    provisioner.observer.observe([])
    provisioner.observer.desired_changed(2)
    reconciler.publish([active("a", "starting", 2, pending={"job": "start"})])
    reconciler.publish([active("a", "available", 2)])
    counts = RequestCounts()
    counts.add("GET", "/srv/services/active/", 200)
    text = scrape(provisioner, counts)
    assert value(text, "ozwald_reconcile_passes_total") == 3
    assert value(text, "ozwald_reconcile_last_pass_duration_seconds") == 0.25
    assert value(text, "ozwald_instance_change_to_available_seconds_count", service="llm") == 1
    assert value(text, "ozwald_api_requests_total", method="GET", route="/srv/services/active/", code="200") == 1
    assert value(text, "ozwald_api_blocking_queries_waiting") == 2
    exported = {family.name for family in text_string_to_metric_families(text)}
    catalogued = {s.name.removesuffix("_total") if s.kind == "counter" else s.name for s in SERIES}
    assert exported - {name for name in exported if name.startswith(tuple(PROCESS_FAMILIES))} == catalogued


def test_labels_are_bounded(core: tuple[Provisioner, StubReconciler]) -> None:
    """No reason, hash, time or container id becomes a label, whatever the statuses carry."""
    provisioner, reconciler = core
    reconciler.publish([active("a", "failed", 1, reason="exited 1 after 0.2 s: boom", spec_hash="abc",
                               container_id="f00", since="2026-01-01T00:00:00+00:00")])
    for family in text_string_to_metric_families(scrape(provisioner)):
        for sample in family.samples:
            assert not {"reason", "spec_hash", "container_id", "since"} & set(sample.labels), sample
            assert "boom" not in "".join(sample.labels.values())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) is not installed")
def test_promtool_finds_nothing_to_fix(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    provisioner.results.record(ProfileResult(  # type: ignore[union-attr]
        service="llm", variety="cpu-only", spec_hash="x", outcome="measured", started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC), ready_s=1.0, ram_peak_mib=1.0, vram_peak_mib={"nvidia:0": 1.0}))
    provisioner.observer.observe([])
    reconciler.publish([active("a", "starting", 2, pending={"job": "start"})])
    reconciler.publish([active("a", "available", 2)])
    counts = RequestCounts()
    counts.add("GET", "/metrics", 200)
    checked = subprocess.run(["promtool", "check", "metrics"], input=scrape(provisioner, counts), text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr)

