# SPDX-License-Identifier: AGPL-3.0-or-later
"""GPU detection, admission and placement end to end, in the test host.

No GPU exists here, so the one stand-in is at the vendor-library seam: the guest's venv gets a `pynvml`
module backed by the stand-in NVML of tests/resources/fakes (two 80 GB GPUs), and the guest gets a CDI
spec that maps each GPU (by index, by UUID, and `all`) to a harmless device node. Everything else is real:
the provisioner service, its NVML wrapper, Podman resolving the CDI names, the container seeing the device.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.guest import VENV, ProvisionerDeployment
from tests.testhost.harness import TestHost

FAKES = Path(__file__).resolve().parents[1] / "resources" / "fakes" / "ozwald_fake_pynvml.py"
UUIDS = ["GPU-0a0a0a0a-1111-2222-3333-444444444444", "GPU-0b0b0b0b-1111-2222-3333-444444444444"]
SHIM = f"""\
# Test stand-in for nvidia-ml-py: NVML answers from tests/resources/fakes, configured below.
import sys
from ozwald_fake_pynvml import GiB, FakeNvidiaGpu, FakeNvml
_fake = FakeNvml([FakeNvidiaGpu(name="NVIDIA H100 80GB HBM3", uuid=u, bus_id=f"00000000:0{{i + 1}}:00.0",
                                total_bytes=80 * GiB, used_bytes=1 * GiB) for i, u in enumerate({UUIDS!r})])
sys.modules[__name__].__dict__.update(vars(_fake.module()))
"""


def cdi_spec() -> str:
    devices = []
    for index, uuid in enumerate(UUIDS):
        edits = {"deviceNodes": [{"path": f"/dev/nvidia{index}", "hostPath": "/dev/null"}],
                 "env": [f"OZWALD_TEST_GPU={index}"]}
        devices += [{"name": str(index), "containerEdits": edits}, {"name": uuid, "containerEdits": edits}]
    devices.append({"name": "all", "containerEdits": {
        "deviceNodes": [{"path": f"/dev/nvidia{i}", "hostPath": "/dev/null"} for i in range(2)]}})
    return json.dumps({"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": devices})


SERVICES = """\
  - name: llm
    image: localhost/ozwald-testserver:latest
    health: {http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}
    varieties:
      nvidia: {environment: {GPU: "true"}, resources: {vram_gb: 50, gpus: 1}}
      cpu-only: {environment: {GPU: "false"}}
  - name: huge
    image: localhost/ozwald-testserver:latest
    varieties:
      nvidia: {resources: {vram_gb: 60}}
  - name: chat
    image: localhost/ozwald-testserver:latest
    health: {http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}
    on_demand: {idle_stop: 10m}
    ports: ["8095:8000"]
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 50}
  - name: code
    image: localhost/ozwald-testserver:latest
    health: {http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}
    on_demand: {idle_stop: 10m}
    ports: ["8096:8000"]
    devices: ["nvidia.com/gpu=0"]
    resources: {vram_gb: 50}
"""


def start_with_stand_in_gpus(testhost: TestHost, deployment: ProvisionerDeployment, services: str) -> None:
    """Ozwald deployed in the test host with the stand-in NVML (as pynvml) and a CDI spec for its GPUs."""
    site = next(testhost.guest_path(f"{VENV}/lib").glob("python3*/site-packages"))
    (site / "ozwald_fake_pynvml.py").write_text(FAKES.read_text())
    (site / "pynvml.py").write_text(SHIM)
    testhost.write_file("/etc/cdi/test-nvidia.json", cdi_spec())
    deployment.write_config(deployment.default_config(services))
    deployment.start()


@pytest.fixture(scope="module")
def ozwald(testhost: TestHost, ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    start_with_stand_in_gpus(testhost, ozwald_deployment, SERVICES)
    yield ozwald_deployment


def call(ozwald: ProvisionerDeployment, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return ozwald.request(method, path, body)


def test_host_resources_report_both_gpus_with_cdi_names(ozwald: ProvisionerDeployment) -> None:
    status, host = call(ozwald, "GET", "/srv/host/resources")
    assert status == 200
    assert host["total_gpus"] == 2 and host["available_gpus"] == ["nvidia:0", "nvidia:1"]
    assert [(g["id"], g["uuid"], g["cdi_name"], g["total_vram"]) for g in host["gpus"]] == [
        ("nvidia:0", UUIDS[0], "nvidia.com/gpu=0", 81920), ("nvidia:1", UUIDS[1], "nvidia.com/gpu=1", 81920)]
    started = time.perf_counter()
    for _ in range(20):
        call(ozwald, "GET", "/srv/host/resources")
    assert time.perf_counter() - started < 20  # sanity only; speed is measured in bench/


def test_variety_chosen_and_gpu_pinned_by_uuid(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    status, plan = call(ozwald, "POST", "/srv/services/active/plan/", [{"name": "llm-a", "service": "llm"}])
    assert status == 200
    [entry] = plan
    assert entry["variety"] == "nvidia" and entry["fit"]["variety"] == "nvidia: picked for this host"
    assert entry["fit"]["devices"] == [f"nvidia.com/gpu={UUIDS[0]}"]
    assert entry["fit"]["gpus"] == {"nvidia:0": {"vram_needed_mib": 51200, "vram_declared_total_mib": 51200,
                                                 "vram_total_mib": 81920, "fits": True}}
    status, _ = call(ozwald, "POST", "/srv/services/active/update/",
                     [{"name": "llm-a", "service": "llm"}, {"name": "llm-b", "service": "llm"}])
    assert status == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = {i["name"]: i for i in call(ozwald, "GET", "/srv/services/active/")[1]}
        if [i["status"] for i in items.values()] == ["available", "available"]:
            break
        time.sleep(0.1)
    assert {n: i["status"] for n, i in items.items()} == {"llm-a": "available", "llm-b": "available"}
    unit_a = testhost.read_file("/run/containers/systemd/ozwald-llm-a.container")
    unit_b = testhost.read_file("/run/containers/systemd/ozwald-llm-b.container")
    assert f"AddDevice=nvidia.com/gpu={UUIDS[0]}\n" in unit_a  # the emptiest GPU, then the other one
    assert f"AddDevice=nvidia.com/gpu={UUIDS[1]}\n" in unit_b
    assert "CUDA_VISIBLE_DEVICES" not in unit_a + unit_b
    # CDI edits reach the container's process (pid 1), not `podman exec` sessions: read pid 1's environment.
    seen = testhost.exec(["podman", "exec", "ozwald-llm-b", "python3", "-c",
                          "import os; env = dict(v.split('=', 1) for v in open('/proc/1/environ').read().split("
                          "chr(0)) if '=' in v); print(env['OZWALD_TEST_GPU'], os.path.exists('/dev/nvidia1'))"])
    assert seen.stdout.split() == ["1", "True"], seen.stderr
    # Posting the same set again keeps the pins: nothing restarts.
    call(ozwald, "POST", "/srv/services/active/update/",
         [{"name": "llm-a", "service": "llm"}, {"name": "llm-b", "service": "llm"}])
    assert testhost.read_file("/run/containers/systemd/ozwald-llm-a.container") == unit_a


def test_a_set_that_does_not_fit_is_refused_with_409_and_nothing_changes(ozwald: ProvisionerDeployment) -> None:
    def running() -> list[tuple[Any, ...]]:  # what runs; the container id may be filled in meanwhile
        return [(i["name"], i["status"], i["variety"], i["profile"], i["info"].get("invocation"),
                 i["info"].get("spec_hash")) for i in call(ozwald, "GET", "/srv/services/active/")[1]]

    before = running()
    body = [{"name": "llm-a", "service": "llm"}, {"name": "llm-b", "service": "llm"},
            {"name": "huge", "variety": "nvidia"}]
    status, reply = call(ozwald, "POST", "/srv/services/active/update/", body)
    assert status == 409
    conflicts = {c["resource"]: c for c in reply["detail"]["conflicts"]}
    assert set(conflicts) == {"vram:nvidia:0", "vram:nvidia:1"}
    assert conflicts["vram:nvidia:0"]["needed"] == 110 and conflicts["vram:nvidia:0"]["short_by"] == 30
    assert "force=true" in reply["detail"]["message"]
    assert running() == before
    status, plan = call(ozwald, "POST", "/srv/services/active/plan/", body)
    assert status == 200
    huge = next(e for e in plan if e["name"] == "huge")
    assert huge["fit"]["does_not_fit"][0].startswith("vram:nvidia:0: ")
    status, reply = call(ozwald, "POST", "/srv/services/active/update/?force=true", body)
    assert status == 202, reply
    call(ozwald, "POST", "/srv/services/active/update/", [])


def test_on_demand_instances_that_do_not_fit_together_swap_under_the_installed_unit(
        ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    """Admission through the API puts them in one swap group, and Ozwald under its own sandboxed unit writes
    their gate drop-ins and opens the gates (the FIFOs in /run/ozwald/swap)."""
    body = [{"name": "chat"}, {"name": "code"}]
    status, plan = call(ozwald, "POST", "/srv/services/active/plan/", body)
    assert status == 200
    planned = {e["name"]: e["fit"] for e in plan if e["name"] in ("chat", "code")}  # others may still stop
    assert {n: fit["exclusive_with"] for n, fit in planned.items()} == {"chat": ["code"], "code": ["chat"]}
    assert all("does_not_fit" not in fit for fit in planned.values())  # each alone fits: 50 of 80 GB
    status, _ = call(ozwald, "POST", "/srv/services/active/update/", body)
    assert status == 202

    def statuses() -> dict[str, str]:
        return {i["name"]: i["status"] for i in call(ozwald, "GET", "/srv/services/active/")[1]}

    def settle(**wanted: str) -> None:
        deadline = time.monotonic() + 60
        while statuses() != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert statuses() == wanted

    settle(chat="idle", code="idle")
    assert "ozwald-code.service" in testhost.read_file(
        "/run/systemd/system/ozwald-chat.service.d/50-ozwald-swap.conf")
    for name, port in (("chat", 8095), ("code", 8096)):
        with urllib.request.urlopen(f"http://{testhost.ip}:{port}/env", timeout=60) as answer:
            assert answer.status == 200  # held until ready: the other one is stopped first
        settle(**{name: "available", ("code" if name == "chat" else "chat"): "idle"})
    call(ozwald, "POST", "/srv/services/active/update/", [])
