# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner end to end: Ozwald runs in the test host as its systemd service, from a venv built
from this tree, with the guest's Redis; the tests call its API from this machine over the guest's IP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.guest import ProvisionerDeployment
from tests.integration.api_kit import active, statuses, update, wait_for
from tests.testhost.harness import TestHost

HEALTH = '{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s, timeout: 2s}'
FLEET = 10
SERVICES = f"""\
  - name: echo
    image: localhost/ozwald-testserver:latest
    ports: ["8100:8000"]
    health: {HEALTH}
    environment: {{MODEL_NAME: base}}
    profiles:
      big: {{environment: {{MODEL_NAME: big, MAX_MODEL_LEN: "45000"}}}}
      small: {{environment: {{MODEL_NAME: small}}}}
    varieties:
      nvidia: {{environment: {{GPU: "true"}}}}
      cpu-only: {{environment: {{GPU: "false"}}}}
  - name: broken
    image: localhost/ozwald-testserver:latest
    restart: "no"
    environment: {{EXIT_CODE: "4"}}
  - name: fleet
    image: localhost/ozwald-testserver:latest
    health: {HEALTH}
"""




@pytest.fixture(scope="module")
def ozwald(testhost: TestHost, ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    ozwald_deployment.write_config(ozwald_deployment.default_config(SERVICES))
    ozwald_deployment.start()
    yield ozwald_deployment








def containers(host: TestHost) -> list[str]:
    out = host.exec(["podman", "ps", "-a", "--filter", "label=ozwald.managed=true", "--format", "{{.Names}}"])
    return sorted(out.stdout.split())


def test_activate_then_available_and_answering(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    assert ozwald.health() == {"status": "healthy"}
    body = update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": "big"}])
    assert body["status"] == "accepted"
    wait_for(lambda: statuses(ozwald) == {"echo": "available"}, what="echo available")
    import json
    import urllib.request

    with urllib.request.urlopen(testhost.url(8100, "/env"), timeout=5) as response:
        env = json.loads(response.read())
    assert (env["MODEL_NAME"], env["MAX_MODEL_LEN"], env["GPU"]) == ("big", "45000", "false")
    # The container id follows the status (it comes from Podman, after systemd's signal).
    info = wait_for(lambda: (lambda i: i if i.get("container_id") else None)(active(ozwald)["echo"]["info"]),
                    what="container id")
    assert info["unit"] == "ozwald-echo.service"


def test_variety_is_picked_for_this_host_when_omitted(ozwald: ProvisionerDeployment) -> None:
    status, plan = ozwald.request("POST", "/srv/services/active/plan/", [{"name": "echo", "profile": "big"}])
    assert status == 200
    assert plan == [{"name": "echo", "action": "keep", "reason": "keep: unchanged and active", "service": "echo",
                     "variety": "cpu-only", "profile": "big",
                     "fit": {"gpus": {}, "variety": "cpu-only: picked for this host"}}]


def test_change_profile_restarts_with_the_new_env(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    before = wait_for(lambda: active(ozwald)["echo"]["info"].get("container_id"), what="container id")
    status, plan = ozwald.request("POST", "/srv/services/active/plan/",
                                  [{"name": "echo", "variety": "cpu-only", "profile": "small"}])
    assert status == 200 and plan[0]["action"] == "restart"
    assert plan[0]["reason"] == "restart: profile big → small changes MAX_MODEL_LEN, MODEL_NAME"
    update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": "small"}])
    wait_for(lambda: (lambda e: e["status"] == "available" and e["profile"] == "small"
                      and e["info"].get("container_id") not in (None, before))(active(ozwald)["echo"]),
             what="echo restarted")
    import json
    import urllib.request

    with urllib.request.urlopen(testhost.url(8100, "/env"), timeout=5) as response:
        env = json.loads(response.read())
    assert env["MODEL_NAME"] == "small" and "MAX_MODEL_LEN" not in env


@pytest.mark.parametrize("body,code,field", [
    ([{"name": "nope"}], 400, "service"),  # service defaults to the name
    ([{"name": "x", "service": "nope"}], 400, "service"),
    ([{"name": "echo", "variety": "tpu"}], 400, "variety"),
    ([{"name": "echo", "profile": "turbo"}], 400, "profile"),
    ([{"name": "echo"}, {"name": "echo"}], 400, "name"),
    ({"name": "echo"}, 422, None),
    ("not json at all", 422, None),
])
def test_bad_input_changes_nothing(ozwald: ProvisionerDeployment, testhost: TestHost, body: Any, code: int,
                                   field: str | None) -> None:
    before = active(ozwald)
    files = sorted(p.name for p in testhost.guest_path("/run/containers/systemd").glob("ozwald-*"))
    status, reply = ozwald.request("POST", "/srv/services/active/update/", body)
    assert status == code, reply
    if field is not None:
        assert reply["detail"]["field"] == field
        assert reply["detail"]["index"] == (1 if body == [{"name": "echo"}, {"name": "echo"}] else 0)
    assert active(ozwald) == before
    assert sorted(p.name for p in testhost.guest_path("/run/containers/systemd").glob("ozwald-*")) == files


def test_oversized_body_is_refused(ozwald: ProvisionerDeployment) -> None:
    status, reply = ozwald.request("POST", "/srv/services/active/update/", [{"name": "echo", "pad": "x" * 1_100_000}])
    assert status == 413 and "detail" in reply


def test_failed_start_is_reported_as_failed_with_the_reason(ozwald: ProvisionerDeployment) -> None:
    update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": "small"}, {"name": "broken"}])
    item = wait_for(lambda: (lambda a: a.get("broken") if a.get("broken", {}).get("status") == "failed" else None)(
        active(ozwald)), what="broken failed")
    assert item["info"]["reason"].startswith("exited 4 after ")
    assert "EXIT_CODE=4" in item["info"]["reason"]
    assert statuses(ozwald)["echo"] == "available"


def test_remove_stops_and_deletes_the_unit(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": "small"}])
    wait_for(lambda: statuses(ozwald) == {"echo": "available"}, what="broken removed")
    assert not testhost.guest_path("/run/containers/systemd/ozwald-broken.container").exists()
    assert containers(testhost) == ["ozwald-echo"]


def test_redis_restarted_empty_restores_desired_state(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    before = wait_for(lambda: active(ozwald)["echo"]["info"].get("container_id"), what="container id")
    key = f"ozwald:{ozwald.provisioner}:desired"
    assert ozwald.redis_cli("EXISTS", key).stdout.strip() == "1"
    # Restart Redis with nothing on disk: it comes back empty, as a cache without persistence does.
    testhost.exec(["systemctl", "stop", "redis-server.service"], check=True)
    testhost.exec(["sh", "-c", "rm -f /var/lib/redis/*.rdb /var/lib/redis/appendonly*"], check=True)
    testhost.exec(["systemctl", "start", "redis-server.service"], check=True)
    wait_for(lambda: ozwald.redis_cli("EXISTS", key).stdout.strip() == "1", what="desired set restored")
    wait_for(lambda: statuses(ozwald) == {"echo": "available"}, what="echo still available")
    assert active(ozwald)["echo"]["info"]["container_id"] == before  # the running service was not touched


def test_kill_9_during_a_10_service_reconcile_converges(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    fleet = [{"name": f"fleet{i}", "service": "fleet"} for i in range(FLEET)]
    update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": "small"}, *fleet])
    old_pid = ozwald.kill("KILL")
    ozwald.wait_restarted(old_pid)
    ozwald.wait_healthy()
    expected = {"echo": "available", **{f"fleet{i}": "available" for i in range(FLEET)}}
    wait_for(lambda: statuses(ozwald) == expected, timeout=120, what="fleet available")
    assert containers(testhost) == sorted(["ozwald-echo", *[f"ozwald-fleet{i}" for i in range(FLEET)]])
    units = sorted(p.name for p in testhost.guest_path("/run/containers/systemd").glob("ozwald-*.container"))
    assert units == sorted(["ozwald-echo.container", *[f"ozwald-fleet{i}.container" for i in range(FLEET)]])


def test_racing_clients_end_at_the_last_accepted_generation(ozwald: ProvisionerDeployment) -> None:
    accepted: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(profile: str) -> None:
        for _ in range(200):
            body = update(ozwald, [{"name": "echo", "variety": "cpu-only", "profile": profile}])
            with lock:
                accepted.append((body["generation"], profile))

    threads = [threading.Thread(target=client, args=(p,)) for p in ("big", "small")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    generations = sorted(g for g, _ in accepted)
    assert len(generations) == 400 and len(set(generations)) == 400
    assert generations == list(range(generations[0], generations[0] + 400))
    last_generation, last_profile = max(accepted)
    wait_for(lambda: (lambda e: e["info"].get("generation") == last_generation and e["profile"] == last_profile
                      and e["status"] == "available")(active(ozwald)["echo"]), timeout=120,
             what=f"generation {last_generation} applied")
    assert set(statuses(ozwald)) == {"echo"}


def test_doctor_on_a_real_host(ozwald: ProvisionerDeployment) -> None:
    out = ozwald.ozwald("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok  ] podman: Podman 5.4 accepts every key Ozwald renders" in out.stdout
    assert "[ok  ] systemd: reachable over D-Bus" in out.stdout
    assert f"[ok  ] redis: cache of provisioner {ozwald.provisioner} reachable" in out.stdout
    assert "[WARN] gpu: nvidia unavailable" in out.stdout
