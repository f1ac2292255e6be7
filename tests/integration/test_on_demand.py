# SPDX-License-Identifier: AGPL-3.0-or-later
"""On-demand instances against real systemd sockets, `systemd-socket-proxyd` and Podman in the test host, and
the same scenario in the simulated host (tests/reconcile/test_on_demand.py holds the simulator's other
scenarios): both must give the same sequence of statuses.

What the issue's probe saw fail, checked here for real: a request that arrives while the container stops for
idleness is held and served by the next start; more than five starts on demand within five minutes never hit
the container's start limit; a container that cannot start never leaves the socket `failed`.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ozwald.config import Settings
from ozwald.provisioner.reconciler import Reconciler
from ozwald.records import DesiredInstance
from tests.integration.driver_kit import PYTHON_HEALTH, Drivers, http_json, server
from tests.integration.on_demand_kit import Statuses, host_post, host_settle, is_status, reconciler_on, sim_settle
from tests.integration.test_reconciler import Desired, Published
from tests.support.simrun import SimRun
from tests.testhost.harness import TestHost

IDLE_S = 3
CHAT = DesiredInstance(name="chat", service="chat")
BROKEN = DesiredInstance(name="broken", service="broken")


def settings() -> Settings:
    # SIM tells the simulated host how the container behaves; the test server ignores it.
    return Settings.model_validate({"services": [
        server("chat", ports=["8090:8000"], health=PYTHON_HEALTH, on_demand={"idle_stop": f"{IDLE_S}s"},
               environment={"SIM": "healthy:2", "START_DELAY_S": "2"}),
        server("broken", ports=["8091:8000"], on_demand={"idle_stop": f"{IDLE_S}s"}, min_uptime="1s",
               environment={"SIM": "fail", "EXIT_CODE": "4"}),
    ]})


class Scenario:
    """One run of the scenario, against either host: `request` is a client's request to an instance's socket
    (True: answered), `settle` waits until the statuses pass a check."""

    def __init__(self, post: Callable[..., None], settle: Callable[[Callable[[Statuses], bool]], Statuses],
                 request: Callable[[str], bool], statuses: Callable[[str], list[str]]) -> None:
        self.post, self.settle, self.request, self.statuses = post, settle, request, statuses

    def run(self) -> dict[str, list[str]]:
        self.post(CHAT, BROKEN)
        self.settle(lambda s: is_status(s, chat="idle", broken="idle"))
        assert self.request("chat")  # held until the container is ready, then served
        self.settle(lambda s: is_status(s, chat="idle"))  # after idle_stop without a connection
        assert not self.request("broken")  # its start fails: the connection is closed, the socket listens on
        self.settle(lambda s: is_status(s, broken="failed"))
        return {"chat": self.statuses("chat"), "broken": self.statuses("broken")}


EXPECTED = {"chat": ["starting", "idle", "starting", "available", "stopping", "idle"],
            "broken": ["starting", "idle", "starting", "failed"]}


def test_the_simulator_gives_the_expected_sequence() -> None:
    sim = SimRun(settings())
    settle = sim_settle(sim)

    def request(name: str) -> bool:
        connection = sim.connect(name)
        settle(lambda _: connection.outcome != "pending")
        return connection.outcome == "served"

    assert Scenario(sim.post, settle, request, sim.sequence).run() == EXPECTED


@pytest.fixture(scope="module")
def on_demand_host(testhost: TestHost) -> Iterator[tuple[Drivers, Reconciler, Desired, Published]]:
    with reconciler_on(testhost, settings()) as running:
        yield running


def _request(host: TestHost, name: str, timeout: float = 60.0) -> bool:
    port = {"chat": 8090, "broken": 8091}[name]
    try:
        http_json(host.url(port, "/env"), timeout=timeout)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
    return True


def _post_idle_chat(reconciler: Reconciler, desired: Desired, published: Published) -> None:
    """Only `chat` desired, and idle."""
    desired.set(CHAT)
    reconciler.wake(desired.value.generation)
    published.wait(lambda s: is_status(s, chat="idle") and set(s) == {"chat"})


@pytest.mark.testhost
def test_the_test_host_gives_the_same_sequence(on_demand_host: Any) -> None:
    drivers, reconciler, desired, published = on_demand_host
    seen = Scenario(host_post(reconciler, desired), host_settle(published), lambda name: _request(drivers.host, name),
                    published.statuses_of).run()
    assert seen == EXPECTED
    chat = published.by_name()["chat"]
    assert chat.info.on_demand is not None and chat.info.on_demand.socket_state == "active/listening"
    assert drivers.systemd.unit_states(["ozwald-broken.socket"])[0].active_state == "active"
    assert "exited 4" in str(published.by_name()["broken"].info.get("reason"))


@pytest.mark.testhost
def test_requests_during_the_idle_stop_and_many_cycles_are_all_served(on_demand_host: Any) -> None:
    """Eight cycles within a few minutes (the start limit is 5 in 5 min), each request sent the moment the
    container is stopping for idleness, after the first."""
    drivers, reconciler, desired, published = on_demand_host
    _post_idle_chat(reconciler, desired, published)
    results = []
    for cycle in range(8):
        results.append(_request(drivers.host, "chat"))
        published.wait(lambda s: is_status(s, chat="stopping"), timeout=60)
        if cycle % 2 == 0:
            results.append(_request(drivers.host, "chat"))  # while the container stops: held, then served
        published.wait(lambda s: is_status(s, chat="idle"), timeout=60)
    assert results == [True] * len(results)
    unit = drivers.systemd.unit_states(["ozwald-chat.service"])[0]
    assert unit.result != "start-limit-hit"
    assert "failed" not in published.statuses_of("chat")


@pytest.mark.testhost
def test_wake_warms_it_and_sleep_frees_it(on_demand_host: Any) -> None:
    drivers, reconciler, desired, published = on_demand_host
    _post_idle_chat(reconciler, desired, published)
    reconciler.nudge("chat", "wake")
    published.wait(lambda s: is_status(s, chat="available"))
    reconciler.nudge("chat", "sleep")
    published.wait(lambda s: is_status(s, chat="idle"))
    assert drivers.systemd.unit_states(["ozwald-chat.service"])[0].active_state == "inactive"
    assert _request(drivers.host, "chat")  # the socket still listens and starts it again
    published.wait(lambda s: is_status(s, chat="idle"), timeout=60)
    reconciler.nudge("chat", "wake")  # woken without a connection: it idles out all the same
    published.wait(lambda s: is_status(s, chat="available"), timeout=60)
    published.wait(lambda s: is_status(s, chat="idle"), timeout=60)


@pytest.mark.testhost
def test_removing_it_removes_every_unit(on_demand_host: Any) -> None:
    drivers, reconciler, desired, published = on_demand_host
    _post_idle_chat(reconciler, desired, published)
    desired.set()
    reconciler.wake(desired.value.generation)
    published.wait(lambda s: not s)
    for path in ("/run/containers/systemd/ozwald-chat.container", "/run/systemd/system/ozwald-chat.socket",
                 "/run/systemd/system/ozwald-chat:proxy.service"):
        assert not drivers.host.guest_path(path).exists(), path
    listed = drivers.systemd.list_units("ozwald-chat*")
    assert not [u for u in listed if u.active_state not in ("inactive", "failed")], listed
