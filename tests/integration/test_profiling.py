# SPDX-License-Identifier: AGPL-3.0-or-later
"""The profiling queue, run for real in the test host: the provisioner starts each queued service alone as
its normal unit, measures it, holds it, stops it, and records the result; the test server's switches
(`START_DELAY_S`, `ALLOC_MIB`) make the truth known, so the measurements are checked against it.

Tolerances (stated here, asserted below):
- RAM: measured peak and steady RAM minus `ALLOC_MIB` in [0, RAM_TOLERANCE_MIB]: the Python interpreter of
  the test server (about 10-15 MiB resident) and, when a sample lands on one, the health check's python3.
  The test host's cgroup2 tree has no memory controller, so RAM is the sum of VmRSS/VmHWM of the
  container's processes (the unit's libpod-payload cgroup), read from /proc.
- Time to ready (systemd's timestamps: the container's main process start to the unit's active): with a
  health check every second, `START_DELAY_S` + [0, READY_TOLERANCE_S]; with none, `min_uptime` + [0, the same].
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.guest import ProvisionerDeployment
from tests.integration.api_kit import wait_for
from tests.testhost.harness import TestHost

RAM_TOLERANCE_MIB = 40.0
READY_TOLERANCE_S = 2.0
HOLD_S = 2
HEALTH = '{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s, timeout: 2s}'
SERVICES = f"""\
  - name: slow
    image: localhost/ozwald-testserver:latest
    health: {HEALTH}
    environment: {{START_DELAY_S: "3"}}
    profiles:
      big: {{environment: {{ALLOC_MIB: "300"}}}}
      small: {{environment: {{ALLOC_MIB: "100"}}}}
  - name: plain
    image: localhost/ozwald-testserver:latest
    min_uptime: 2s
    environment: {{ALLOC_MIB: "200"}}
  - name: echo
    image: localhost/ozwald-testserver:latest
    health: {HEALTH}
  - name: broken
    image: localhost/ozwald-testserver:latest
    restart: "no"
    environment: {{EXIT_CODE: "4"}}
  - name: notes
    type: source-files
    environment: {{DIRECTORY: notes/}}
"""
CAPACITY_GB = 0.5  # RAM admission counts on: the host's total less the reserve set below


def config(ozwald: ProvisionerDeployment, testhost: TestHost, services: str = SERVICES) -> str:
    meminfo = testhost.exec(["cat", "/proc/meminfo"], check=True).stdout
    match = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    assert match is not None
    total_gb = round(int(match.group(1)) * 1024 / 1024**3, 2)
    provisioner = (f"    profiling: {{hold: {HOLD_S}s, margin: 0.1, sample_interval: 0.2s}}\n"
                   f"    admission: {{reserve_memory_gb: {total_gb - CAPACITY_GB:.2f}}}\n")
    text = ozwald.default_config(services)
    return text.replace("\nservices:", "\n" + provisioner.rstrip("\n") + "\nservices:", 1)


@pytest.fixture(scope="module")
def ozwald(testhost: TestHost, ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    ozwald_deployment.write_config(config(ozwald_deployment, testhost))
    ozwald_deployment.start()
    yield ozwald_deployment


def call(ozwald: ProvisionerDeployment, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, reply = ozwald.request(method, path, body)
    assert status == expect, reply
    return reply


def queue(ozwald: ProvisionerDeployment) -> list[dict[str, Any]]:
    return call(ozwald, "GET", "/srv/services/profile")  # type: ignore[no-any-return]


def results(ozwald: ProvisionerDeployment) -> list[dict[str, Any]]:
    return call(ozwald, "GET", "/srv/services/profile/results")  # type: ignore[no-any-return]


def results_of(ozwald: ProvisionerDeployment, request_id: str) -> list[dict[str, Any]]:
    return [r for r in results(ozwald) if r["request_id"] == request_id]


def update(ozwald: ProvisionerDeployment, items: list[dict[str, Any]], expect: int = 202) -> Any:
    return call(ozwald, "POST", "/srv/services/active/update/", items, expect)


def statuses(ozwald: ProvisionerDeployment) -> dict[str, str]:
    return {s["name"]: s["status"] for s in call(ozwald, "GET", "/srv/services/active/")}


def test_bad_items_are_refused_naming_the_item_and_nothing_is_queued(ozwald: ProvisionerDeployment) -> None:
    status, body = ozwald.request("POST", "/srv/services/profile",
                                  {"services": [{"name": "slow"}, {"name": "slow", "profile": "turbo"}]})
    assert status == 400
    assert body["detail"]["index"] == 1 and body["detail"]["field"] == "profile"
    assert "its profiles: big, small" in body["detail"]["message"]
    status, body = ozwald.request("POST", "/srv/services/profile", {"services": [{"name": "notes"}]})
    assert status == 400 and body["detail"]["index"] == 0 and "only container services" in body["detail"]["message"]
    status, body = ozwald.request("POST", "/srv/services/profile", {"all": True, "extra": 1})
    assert status == 400 and body["detail"]["field"] == "extra"
    assert queue(ozwald) == []


def test_all_profiles_every_service_and_measures_within_tolerance(ozwald: ProvisionerDeployment) -> None:
    accepted = call(ozwald, "POST", "/srv/services/profile", {"all": True}, expect=202)
    rid = accepted["request_id"]
    assert [(i["service"], i["profile"]) for i in accepted["items"]] == [
        ("slow", "big"), ("slow", "small"), ("plain", None), ("echo", None), ("broken", None)]
    listed = wait_for(lambda: (lambda q: q if q and q[0]["state"] == "running" else None)(queue(ozwald)),
                      what="the first item running")
    assert [e["position"] for e in listed] == [0, 1, 2, 3, 4]
    assert listed[0]["progress"]["request_items"] == 5 and listed[0]["attempts"] == 1
    done = wait_for(lambda: (lambda r: r if len(r) == 5 else None)(results_of(ozwald, rid)), timeout=180,
                    what="five results")
    assert queue(ozwald) == []
    by = {(r["service"], r["profile"]): r for r in done}
    print("\nprofiling results:\n" + json.dumps(done, indent=1))
    for (service, profile), alloc, ready in [(("slow", "big"), 300, 3.0), (("slow", "small"), 100, 3.0),
                                             (("plain", None), 200, 2.0)]:
        result = by[(service, profile)]
        assert result["outcome"] == "measured", result
        assert 0 <= result["ram_peak_mib"] - alloc <= RAM_TOLERANCE_MIB, result
        assert 0 <= result["ram_steady_mib"] - alloc <= RAM_TOLERANCE_MIB, result
        assert ready <= result["ready_s"] <= ready + READY_TOLERANCE_S, result
        assert "libpod-payload" in result["ram_method"]
        assert result["held_s"] >= HOLD_S and result["stale"] is False
        assert result["vram_peak_mib"] == {} and result["vram_method"] == "no GPU"
    assert by[("slow", "big")]["ready_by"] == "health check"
    assert by[("plain", None)]["ready_by"] == "minimum uptime (2 s)"
    broken = by[("broken", None)]
    assert broken["outcome"] == "failed" and "exited 4" in broken["reason"], broken
    # Shown next to each variety/profile in the configured services.
    configured = {s["name"]: s for s in call(ozwald, "GET", "/srv/services/configured/")}
    assert configured["slow"]["profiles"]["big"]["profiling"]["-"]["ram_peak_mib"] == by[("slow", "big")][
        "ram_peak_mib"]
    assert configured["plain"]["profiling"]["outcome"] == "measured"
    assert statuses(ozwald) == {}  # every profiled instance stopped


def test_admission_uses_the_measured_footprint(ozwald: ProvisionerDeployment) -> None:
    # slow/big measured about 0.33 GB (+10 %), plain about 0.22 GB: together more than the 0.5 GB capacity.
    status, body = ozwald.request("POST", "/srv/services/active/update/",
                                  [{"name": "slow", "profile": "big"}, {"name": "plain"}])
    assert status == 409, body
    assert "memory: slow, plain need" in body["detail"]["message"]
    plan = call(ozwald, "POST", "/srv/services/active/plan/", [{"name": "slow", "profile": "small"}, {"name": "plain"}])
    footprint = {e["name"]: e["fit"]["footprint"] for e in plan}
    assert footprint["slow"]["memory"] == "measured" and "+10 % margin" in footprint["slow"]["measured"]
    assert footprint["slow"]["measured"].startswith("measured 20")  # and when
    update(ozwald, [{"name": "slow", "profile": "small"}, {"name": "plain"}])  # 0.12 + 0.22 GB fit
    wait_for(lambda: statuses(ozwald) == {"slow": "available", "plain": "available"}, what="both available")
    available = {r["name"]: r for r in call(ozwald, "GET", "/srv/resources/available/")}
    assert "memory" in available
    update(ozwald, [])
    wait_for(lambda: statuses(ozwald) == {}, what="all stopped")


def test_an_update_preempts_a_run_which_runs_again_afterwards(ozwald: ProvisionerDeployment) -> None:
    rid = call(ozwald, "POST", "/srv/services/profile", {"service": "slow", "profile": "big"}, expect=202)[
        "request_id"]
    wait_for(lambda: (lambda q: q and q[0]["state"] == "running")(queue(ozwald)), what="running")
    update(ozwald, [{"name": "echo"}])
    wait_for(lambda: statuses(ozwald) == {"echo": "available"}, what="echo available, the profiled one gone")
    [item] = queue(ozwald)
    assert (item["request_id"], item["state"], item["position"], item["preempted"]) == (rid, "queued", 0, 1)
    assert item["progress"]["phase"].startswith("waiting: generation")
    assert results_of(ozwald, rid) == []
    update(ozwald, [])
    [result] = wait_for(lambda: results_of(ozwald, rid), timeout=60, what="the re-run's result")
    assert result["outcome"] == "measured" and 0 <= result["ram_peak_mib"] - 300 <= RAM_TOLERANCE_MIB
    assert queue(ozwald) == []


def test_queue_and_results_survive_provisioner_and_redis_restarts(ozwald: ProvisionerDeployment,
                                                                   testhost: TestHost) -> None:
    update(ozwald, [{"name": "echo"}])  # keeps the queue waiting
    rid = call(ozwald, "POST", "/srv/services/profile", {"services": [{"name": "plain"}]}, expect=202)["request_id"]
    before = len(results(ozwald))
    ozwald.restart()
    assert [i["request_id"] for i in queue(ozwald)] == [rid]
    testhost.exec(["systemctl", "stop", "redis-server.service"], check=True)
    testhost.exec(["sh", "-c", "rm -f /var/lib/redis/*.rdb /var/lib/redis/appendonly*"], check=True)
    testhost.exec(["systemctl", "start", "redis-server.service"], check=True)
    wait_for(lambda: ozwald.request("GET", "/srv/services/profile")[0] == 200, what="the cache back")
    assert [i["request_id"] for i in queue(ozwald)] == [rid]
    assert len(results(ozwald)) == before
    update(ozwald, [])
    [result] = wait_for(lambda: results_of(ozwald, rid), timeout=60, what="the result after the restarts")
    assert result["outcome"] == "measured"


def test_a_stale_result_is_not_used_and_the_plan_says_so(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    changed = SERVICES.replace('big: {environment: {ALLOC_MIB: "300"}}',
                               'big: {environment: {ALLOC_MIB: "300", MAX_MODEL_LEN: "4096"}}')
    assert changed != SERVICES
    ozwald.write_config(config(ozwald, testhost, changed))
    ozwald.restart()
    stale = [r for r in results(ozwald) if (r["service"], r["profile"]) == ("slow", "big")]
    assert stale and all(r["stale"] for r in stale)
    plan = call(ozwald, "POST", "/srv/services/active/plan/", [{"name": "slow", "profile": "big"}, {"name": "plain"}])
    footprint = {e["name"]: e["fit"].get("footprint") for e in plan}
    assert footprint["slow"]["memory"] == "none" and "is stale" in footprint["slow"]["not_used"]
    assert footprint["plain"]["memory"] == "measured"
    # Measured, the pair did not fit; with the stale result unused, only plain counts, and it does.
    update(ozwald, [{"name": "slow", "profile": "big"}, {"name": "plain"}])
    update(ozwald, [])
    wait_for(lambda: statuses(ozwald) == {}, what="all stopped")
