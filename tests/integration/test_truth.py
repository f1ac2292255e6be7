# SPDX-License-Identifier: AGPL-3.0-or-later
"""Truthful statuses under change, with the truth monitor watching: Ozwald runs in the test host as its
systemd service; the API and the containers are reached from this machine over the guest's address."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ozwald.config import Settings, load_settings
from tests.deploy.guest import REDIS_PORT, ProvisionerDeployment
from tests.integration.api_kit import active, update, wait_for
from tests.integration.truth import TruthMonitor, read_env
from tests.testhost.harness import TestHost

pytestmark = pytest.mark.testhost

HEALTH = '{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s, timeout: 2s}'
IMAGE = "localhost/ozwald-testserver:latest"
SERVICES = f"""\
  - name: model
    image: {IMAGE}
    ports: ["8200:8000"]
    health: {HEALTH}
    environment: {{MODEL_NAME: base}}
    profiles:
      small: {{environment: {{MODEL_NAME: small, MAX_MODEL_LEN: "4096"}}}}
      large: {{environment: {{MODEL_NAME: large, GPU_MEMORY_UTILIZATION: "0.9"}}}}
    varieties:
      cpu-only: {{environment: {{GPU: "false"}}}}
      nvidia: {{environment: {{GPU: "true"}}, devices: []}}
  - name: plain
    image: {IMAGE}
    ports: ["8201:8000"]
    min_uptime: 1s
    environment: {{MODEL_NAME: plain}}
    profiles:
      small: {{environment: {{MODEL_NAME: small}}}}
      large: {{environment: {{MODEL_NAME: large}}}}
  - name: failfast
    image: {IMAGE}
    min_uptime: 2s
    restart: on-failure
    restart_delay: 1s
    environment: {{EXIT_CODE: "7"}}
  - name: crashloop
    image: {IMAGE}
    ports: ["8202:8000"]
    min_uptime: 3s
    restart: on-failure
    restart_delay: 1s
    environment: {{CRASH_AFTER_S: "2"}}
  - name: web
    image: {IMAGE}
    ports: ["8203:8000"]
    min_uptime: 1s
  - name: redisclash
    image: {IMAGE}
    ports: ["{REDIS_PORT}:8000"]
    min_uptime: 1s
"""
PORTS = {"model": 8200, "plain": 8201, "crashloop": 8202}




@pytest.fixture(scope="module")
def ozwald(testhost: TestHost, ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    ozwald_deployment.write_config(ozwald_deployment.default_config(SERVICES))
    ozwald_deployment.start()
    yield ozwald_deployment






def settings_of(ozwald: ProvisionerDeployment) -> Settings:
    path = Path(tempfile.mkdtemp()) / "ozwald.yml"
    path.write_text(ozwald.default_config(SERVICES), encoding="utf-8")
    return load_settings(path)


def monitor(ozwald: ProvisionerDeployment, testhost: TestHost, *names: str) -> TruthMonitor:
    settings = settings_of(ozwald)

    def get() -> list[dict[str, Any]]:
        status, body = ozwald.request("GET", "/srv/services/active/", timeout=5)
        assert status == 200
        return body  # type: ignore[no-any-return]
    return TruthMonitor(settings, get, {n: testhost.url(PORTS[n], "/env") for n in names if n in PORTS})


def settled(ozwald: ProvisionerDeployment, name: str, variety: str | None, profile: str | None) -> bool:
    item = active(ozwald).get(name)
    return bool(item and item["status"] == "available" and item["profile"] == profile
                and (variety is None or item["variety"] == variety) and "pending" not in item["info"])


@pytest.mark.parametrize("name", ["model", "plain"])
def test_repeated_profile_swaps_are_truthful_and_never_fail(ozwald: ProvisionerDeployment, testhost: TestHost,
                                                            name: str) -> None:
    """10 fast swaps (faster than one a second), then 10 slow ones, each waited for: never `failed` (the
    start limit counts only crashes), never the new profile `available` while the old container serves."""
    update(ozwald, [{"name": name, "profile": "small"}])
    wait_for(lambda: settled(ozwald, name, None, "small"), what=f"{name} small")
    with monitor(ozwald, testhost, name) as truth:
        for i in range(10):
            update(ozwald, [{"name": name, "profile": "large" if i % 2 == 0 else "small"}])
            time.sleep(0.3)
        wait_for(lambda: settled(ozwald, name, None, "small"), what=f"{name} settles on small")
        for i in range(10):
            profile = "large" if i % 2 == 0 else "small"
            update(ozwald, [{"name": name, "profile": profile}])
            wait_for(lambda: settled(ozwald, name, None, profile), what=f"{name} {profile}")
            env = read_env(testhost.url(PORTS[name], "/env"))
            assert env is not None and env["MODEL_NAME"] == profile
    assert "failed" not in truth.statuses_seen.get(name, []), truth.report()
    truth.assert_truthful(min_checked=10)
    print(f"{name}: {truth.report().splitlines()[0]}")


def test_variety_swaps_are_truthful(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    with monitor(ozwald, testhost, "model") as truth:
        for variety in ("nvidia", "cpu-only", "nvidia", "cpu-only"):
            # nvidia asks for GPUs this host lacks: devices [] keeps it a plain container (the env differs)
            update(ozwald, [{"name": "model", "variety": variety, "profile": "large"}])
            time.sleep(0.4)
        try:
            wait_for(lambda: settled(ozwald, "model", "cpu-only", "large"), timeout=90, what="model cpu-only/large")
        except AssertionError as exc:  # keep what was seen, and the provisioner's own account
            raise AssertionError(f"{exc}\n{truth.report()}\n{ozwald.journal(lines=80)}") from None
        time.sleep(1.0)  # let the monitor check the settled state too
    truth.assert_truthful()


def test_a_container_that_exits_at_once_is_never_available(ozwald: ProvisionerDeployment,
                                                           testhost: TestHost) -> None:
    with monitor(ozwald, testhost, "failfast") as truth:
        update(ozwald, [{"name": "failfast"}])
        item = wait_for(lambda: (lambda i: i if i and i["status"] == "failed" else None)(
            active(ozwald).get("failfast")), what="failfast failed")
    assert "available" not in truth.statuses_seen["failfast"], truth.statuses_seen
    assert "exited 7" in item["info"]["reason"]
    assert item["info"]["reason"].startswith("crash loop: systemd gave up (start limit hit) after ")


def test_a_crash_loop_is_never_available_and_says_so(ozwald: ProvisionerDeployment, testhost: TestHost) -> None:
    reasons: list[str] = []
    with monitor(ozwald, testhost, "crashloop") as truth:
        update(ozwald, [{"name": "crashloop"}])

        def ended() -> dict[str, Any] | None:
            item = active(ozwald).get("crashloop")
            if item and item["info"].get("restarting"):
                reasons.append(item["info"]["reason"])
            return item if item and item["status"] == "failed" else None
        item = wait_for(ended, timeout=120, what="crashloop failed")
    assert "available" not in truth.statuses_seen["crashloop"], truth.statuses_seen
    assert any(r.startswith("restarting after a crash (") and "exited 1" in r for r in reasons), reasons[-3:]
    assert item["info"]["reason"].startswith("crash loop: systemd gave up (start limit hit) after 5 automatic")
    assert "CRASH_AFTER_S=2.0 reached" in item["info"]["reason"]


def test_port_conflicts_are_refused_and_shown_in_the_plan(ozwald: ProvisionerDeployment) -> None:
    update(ozwald, [{"name": "web"}])
    wait_for(lambda: settled(ozwald, "web", None, None), what="web available", every=0.05)
    before = {name: (item["status"], item["profile"]) for name, item in active(ozwald).items()}
    twice = [{"name": "web"}, {"name": "web2", "service": "web"}]
    for force in ("", "?force=true"):
        status, body = ozwald.request("POST", f"/srv/services/active/update/{force}", twice)
        assert status == 409, body
        message = body["detail"]["message"]
        assert "port *:8203/tcp: published by both web and web2" in message, message
    status, plan = ozwald.request("POST", "/srv/services/active/plan/", twice)
    assert status == 200
    assert {e["name"]: e["fit"].get("port_conflicts") for e in plan}["web2"] == [
        "port *:8203/tcp: published by both web and web2"]
    # A port another program on the host listens on (the guest's Redis): refused too, force or not.
    status, body = ozwald.request("POST", "/srv/services/active/update/?force=true", [{"name": "redisclash"}])
    assert status == 409, body
    assert f"port *:{REDIS_PORT}/tcp: redisclash publishes it, but another process on the host" \
        in body["detail"]["message"], body
    assert {name: (item["status"], item["profile"]) for name, item in active(ozwald).items()} == before


def test_kill_9_in_the_middle_of_a_swap_converges_truthfully(ozwald: ProvisionerDeployment,
                                                              testhost: TestHost) -> None:
    update(ozwald, [{"name": "plain", "profile": "small"}])
    wait_for(lambda: settled(ozwald, "plain", None, "small"), what="plain small")
    with monitor(ozwald, testhost, "plain") as truth:
        update(ozwald, [{"name": "plain", "profile": "large"}])
        old_pid = ozwald.kill("KILL")
        ozwald.wait_restarted(old_pid)
        ozwald.wait_healthy()
        wait_for(lambda: settled(ozwald, "plain", None, "large"), what="plain large after kill -9")
        time.sleep(1.0)  # let the monitor check the settled state too
    env = read_env(testhost.url(PORTS["plain"], "/env"))
    assert env is not None and env["MODEL_NAME"] == "large"
    truth.assert_truthful()


def test_random_walk_of_desired_sets_stays_truthful_and_converges(ozwald: ProvisionerDeployment,
                                                                  testhost: TestHost) -> None:
    """A seeded random walk: random desired sets at random pace, two orchestrators at once for part of it;
    the monitor checks every step, and the end state is the last accepted generation."""
    rng = random.Random(20261202)
    choices = [{"name": "model", "profile": p, "variety": "cpu-only"} for p in ("small", "large")] + \
              [{"name": "plain", "profile": p} for p in ("small", "large")]
    accepted: list[tuple[int, list[dict[str, Any]]]] = []
    lock = threading.Lock()

    def walk(seed: int, steps: int) -> None:
        local = random.Random(seed)
        for _ in range(steps):
            items: dict[str, dict[str, Any]] = {}
            for choice in local.sample(choices, local.randint(0, len(choices))):
                items.setdefault(choice["name"], choice)
            body = update(ozwald, list(items.values()))
            with lock:
                accepted.append((body["generation"], list(items.values())))
            time.sleep(local.choice([0.0, 0.1, 0.5, 1.5]))

    with monitor(ozwald, testhost, "model", "plain") as truth:
        walk(rng.randint(0, 10**6), 8)
        racers = [threading.Thread(target=walk, args=(rng.randint(0, 10**6), 6)) for _ in range(2)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join()
        last_generation, last_items = max(accepted, key=lambda a: a[0])
        wanted = {i["name"]: i["profile"] for i in last_items}

        def converged() -> bool:
            now = active(ozwald)
            return set(now) == set(wanted) and all(
                now[n]["status"] == "available" and now[n]["profile"] == p and "pending" not in now[n]["info"]
                and now[n]["info"]["generation"] == last_generation for n, p in wanted.items())
        wait_for(converged, timeout=120, what=f"generation {last_generation}: {wanted}")
    truth.assert_truthful(min_checked=1 if wanted else 0)
    print(f"random walk: {len(accepted)} updates; {truth.report().splitlines()[0]}")
