# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald fleet` and `ozwald.fleet.Fleet` over two real provisioners, one of them stopped in the middle.

Each provisioner is a real core (`ozwald.provisioner.core.Provisioner`) on its own database of a real Redis,
behind its own real Waitress API server on a loopback port; only the host-facing parts are stood in
(tests/support/provisioner_kit.py), and provisioner `gpu` reports one 24 GiB GPU at the resource seam.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ozwald import cli
from ozwald.api import ApiServer, create_server
from ozwald.config import load_settings
from ozwald.fleet import Candidate, Fleet
from ozwald.provisioner.core import Provisioner
from ozwald.records import ActiveService, ServiceRequest
from ozwald.resources.models import GpuInfo, HostSnapshot
from ozwald.state.redis_conn import connect
from tests.support.provisioner_kit import GIB, StubReconciler, StubResources, make_provisioner
from tests.support.redis_server import RedisServer, free_port, redis_server

__all__ = ["redis_server"]

KEY = "fleet-test-key-0123456789"
SERVICES = """\
services:
  - name: llm
    image: localhost/llm:1
    resources: {memory_gb: 4}
    profiles:
      big: {resources: {memory_gb: 64}}
"""


class GpuResources(StubResources):
    """The CPU-only stand-in host, plus one 24 GiB NVIDIA GPU with 6 GiB in use."""

    def snapshot(self) -> HostSnapshot:
        gpu = GpuInfo(vendor="nvidia", index=0, uuid="GPU-1", name="NVIDIA RTX 4090", vram_total_mib=24576,
                      vram_free_mib=18432, vram_used_mib=6144)
        return HostSnapshot(taken_at=0.0, cpu_cores_total=8, cpu_load_percent=None, cpu_cores_available=8.0,
                            ram_total_bytes=16 * GIB, ram_available_bytes=16 * GIB, gpus=(gpu,))


@dataclass
class Node:
    name: str
    provisioner: Provisioner
    reconciler: StubReconciler
    server: ApiServer

    def publish(self, *services: ActiveService) -> None:
        self.reconciler.publish(list(services))


@pytest.fixture
def nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    clients = []
    try:
        for db, name in enumerate(("gpu", "cpu")):
            client = connect(redis_server.params(db=db))
            client.execute("FLUSHDB")
            clients.append(client)
            work = tmp_path / name
            work.mkdir()
            provisioner, reconciler = make_provisioner(SERVICES, client, work,
                                                       GpuResources() if name == "gpu" else None)
            provisioner.start()
            server = create_server(provisioner, KEY, host="127.0.0.1", port=0)
            server.start()
            made[name] = Node(name, provisioner, reconciler, server)
        yield made
    finally:
        for node in made.values():
            node.server.close()
            node.provisioner.stop()
        for client in clients:
            client.close()


def settings_file(tmp_path: Path, nodes: dict[str, Node]) -> Path:
    text = "hosts:\n  - {name: here, ip: 127.0.0.1}\nprovisioners:\n"
    for node in nodes.values():
        text += (f"  - {{name: {node.name}, host: here, cache: {{type: redis}}, "
                 f"api: {{port: {node.server.port}}}}}\n")
    path = tmp_path / "fleet.yml"
    path.write_text(text + SERVICES)
    return path


def llm(name: str, status: str = "available", profile: str | None = None) -> ActiveService:
    return ActiveService(name=name, service="llm", profile=profile, status=status)  # type: ignore[arg-type]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_fleet_shows_every_provisioner_and_survives_one_stopping(
        nodes: dict[str, Node], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", KEY)
    monkeypatch.setenv("OZWALD_ENV_FILE", str(tmp_path / "absent.env"))
    nodes["gpu"].publish(llm("llm-a"), llm("llm-b", "starting", "big"))
    config = str(settings_file(tmp_path, nodes))
    fleet = Fleet.from_settings(load_settings(config), KEY, timeout=5)
    gpu, cpu = fleet.status()
    assert (gpu.provisioner, gpu.reachable, [s.name for s in gpu.services]) == ("gpu", True, ["llm-a", "llm-b"])
    assert gpu.gpu_memory_mib == (6144, 24576)
    assert (cpu.provisioner, cpu.reachable, cpu.services, cpu.gpu_memory_mib) == ("cpu", True, (), None)

    code, out, _ = run_cli(["fleet", "--config", config], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "PROVISIONER", "INSTANCE", "STATUS", "VARIETY", "PROFILE", "GPU", "MEM",
                                "USED/TOTAL"]
    assert lines[1].split() == ["here", "gpu", "llm-a", "available", "-", "-", "6.0/24.0", "GiB"]
    assert lines[2].split() == ["here", "gpu", "llm-b", "starting", "-", "big", "6.0/24.0", "GiB"]
    assert lines[3].split() == ["here", "cpu", "-", "(no", "instances)", "-", "-", "-"]

    nodes["cpu"].server.close()  # one provisioner goes away in the middle
    code, out, _ = run_cli(["fleet", "--config", config, "--json"], capsys)
    assert code == 0
    shown = {m["provisioner"]: m for m in json.loads(out)}
    assert shown["gpu"]["reachable"] and [s["name"] for s in shown["gpu"]["services"]] == ["llm-a", "llm-b"]
    assert shown["gpu"]["gpu_memory_mib"] == {"used": 6144, "total": 24576}
    assert shown["cpu"]["reachable"] is False and "cannot reach" in shown["cpu"]["error"]
    code, out, _ = run_cli(["fleet", "--config", config], capsys)
    assert code == 0 and f"unreachable: cannot reach http://127.0.0.1:{nodes['cpu'].server.port}" in out

    nodes["gpu"].server.close()
    code, out, err = run_cli(["fleet", "--config", config], capsys)
    assert code == 3 and "no provisioner answered" in err


def test_a_provisioner_that_never_answers_costs_its_timeout_not_more(
        nodes: dict[str, Node], tmp_path: Path) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        extra = ("  - {name: silent, host: here, cache: {type: redis}, "
                 f"api: {{port: {silent.getsockname()[1]}}}}}\n")
        text = settings_file(tmp_path, nodes).read_text().replace("services:\n", extra + "services:\n", 1)
        fleet = Fleet.from_settings(load_settings_text(tmp_path, text), KEY, timeout=0.5)
        statuses = {s.provisioner: s for s in fleet.status()}
        assert statuses["gpu"].reachable and statuses["cpu"].reachable
        assert statuses["silent"].reachable is False and "timed out" in str(statuses["silent"].error)
        assert 0.5 <= statuses["silent"].seconds < 5  # bounded by its timeout (sanity: speed is in bench/)
    finally:
        silent.close()


def load_settings_text(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "with-silent.yml"
    path.write_text(text)
    return load_settings(path)


def test_place_asks_every_plan_and_orders_by_headroom(nodes: dict[str, Node], tmp_path: Path) -> None:
    nodes["gpu"].provisioner.update([ServiceRequest(name="llm"), ServiceRequest(name="llm-x", service="llm")])
    nodes["gpu"].publish(llm("llm", "starting"), llm("llm-x", "starting"))  # 8 GB reserved while starting
    fleet = Fleet.from_settings(load_settings(settings_file(tmp_path, nodes)), KEY, timeout=5)
    best, second = fleet.place("llm")
    assert (best.provisioner, best.fits, best.instance) == ("cpu", True, "llm")
    assert (second.provisioner, second.fits, second.instance) == ("gpu", True, "llm-2")  # a free name there
    assert best.headroom_ram_gb is not None and second.headroom_ram_gb is not None
    assert best.headroom_ram_gb > second.headroom_ram_gb
    assert second.entry is not None and second.entry.action == "start"
    assert nodes["gpu"].provisioner.desired.read().generation == 1  # advice only: nothing was applied

    too_big = fleet.place("llm", profile="big")
    assert [c.fits for c in too_big] == [False, False]
    assert all(any("memory" in r and "need" in r for r in c.reasons) for c in too_big)
    unknown = fleet.place("llm", variety="tpu")
    assert all(not c.fits and "has no variety 'tpu'" in c.reasons[0] for c in unknown)

    nodes["cpu"].server.close()
    [gpu, cpu] = fleet.place("llm")
    assert (gpu.provisioner, gpu.fits) == ("gpu", True)
    assert (cpu.provisioner, cpu.fits) == ("cpu", False) and "cannot reach" in cpu.reasons[0]


def test_candidates_order_fitting_first_then_vram_then_ram() -> None:
    cands = [Candidate("a", "h", False, ("no",)), Candidate("b", "h", True, headroom_vram_mib=100, headroom_ram_gb=1),
             Candidate("c", "h", True, headroom_vram_mib=900, headroom_ram_gb=0.5),
             Candidate("d", "h", True, headroom_vram_mib=100, headroom_ram_gb=9)]
    assert [c.provisioner for c in sorted(cands, key=Candidate.sort_key)] == ["c", "d", "b", "a"]


def test_from_settings_builds_urls_from_hosts_and_api_ports(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    port = free_port()
    path.write_text("hosts:\n  - {name: a, ip: 10.0.0.5}\n  - {name: b, ip: 'fd00::1'}\nprovisioners:\n"
                    f"  - {{name: pa, host: a, cache: {{type: redis}}, api: {{port: {port}}}}}\n"
                    "  - {name: pb, host: b, cache: {type: redis}}\n")
    fleet = Fleet.from_settings(load_settings(path), KEY)
    assert [(m.provisioner, m.url) for m in fleet.members] == [("pa", f"http://10.0.0.5:{port}"),
                                                               ("pb", "http://[fd00::1]:8000")]
