# SPDX-License-Identifier: AGPL-3.0-or-later
"""Two on-demand instances that swap (they do not fit together on their GPU), against real systemd sockets,
`systemd-socket-proxyd`, the swap gate's FIFO and Podman in the test host, and the same scenario in the
simulated host: both must give the same sequences of statuses.

The scenario: a request to each in turn (the second stops the first before it starts); a request to the
second while the first is still loading: the first start is not interrupted, both are served, in turn; and a
request to the second while a connection is open on the first: the first is stopped once it closes (its
connections are counted in the test host's own network namespace, /proc/<pid>/net).
"""

from __future__ import annotations

import socket
import threading
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
PORTS = {"chat": 8093, "code": 8094}
CHAT = DesiredInstance(name="chat", service="chat", exclusive_with=("code",))
CODE = DesiredInstance(name="code", service="code", exclusive_with=("chat",))


def settings() -> Settings:
    # SIM tells the simulated host how the container behaves; the test server ignores it.
    return Settings.model_validate({"services": [
        server(name, ports=[f"{port}:8000"], health=PYTHON_HEALTH, on_demand={"idle_stop": f"{IDLE_S}s"},
               environment={"SIM": "healthy:2", "START_DELAY_S": "2"}) for name, port in PORTS.items()]})


class Scenario:
    """`request(name)` starts a client's request and returns a function that waits for its answer (True:
    served); `hold(name)` opens a connection and returns the function that closes it; `settle` waits until the
    statuses pass a check."""

    def __init__(self, post: Callable[..., None], settle: Callable[[Callable[[Statuses], bool]], Statuses],
                 request: Callable[[str], Callable[[], bool]], hold: Callable[[str], Callable[[], None]],
                 statuses: Callable[[str], list[str]]) -> None:
        self.post, self.settle, self.request, self.hold, self.statuses = post, settle, request, hold, statuses

    def run(self) -> dict[str, list[str]]:
        self.post(CHAT, CODE)
        self.settle(lambda s: is_status(s, chat="idle", code="idle"))
        assert self.request("chat")()
        assert self.request("code")()  # chat is stopped first
        self.settle(lambda s: is_status(s, chat="idle", code="idle"))
        chat = self.request("chat")
        self.settle(lambda s: is_status(s, chat="starting"))
        code = self.request("code")  # chat is loading: code waits at its gate, chat is served first
        assert chat() and code()
        self.settle(lambda s: is_status(s, chat="idle", code="idle"))
        close = self.hold("chat")  # a connection open on chat: a request in flight, which a swap lets end
        self.settle(lambda s: is_status(s, chat="available"))
        code = self.request("code")
        seen = self.settle(lambda s: "requests in flight of chat" in str(s["code"].info.get("pending")))
        assert is_status(seen, chat="available", code="starting")
        close()
        assert code()
        self.settle(lambda s: is_status(s, chat="idle", code="idle"))
        return {"chat": self.statuses("chat"), "code": self.statuses("code")}


CYCLE = ["starting", "available", "stopping", "idle"]
EXPECTED = {"chat": ["starting", "idle", *CYCLE * 3], "code": ["starting", "idle", *CYCLE * 3]}


def test_the_simulator_gives_the_expected_sequences() -> None:
    sim = SimRun(settings())
    settle = sim_settle(sim)

    def request(name: str) -> Callable[[], bool]:
        connection = sim.connect(name)

        def answer() -> bool:
            settle(lambda _: connection.outcome != "pending")
            return connection.outcome == "served"
        return answer

    def hold(name: str) -> Callable[[], None]:
        connection = sim.connect(name, duration=3600)
        return lambda: sim.host.close(connection)

    assert Scenario(sim.post, settle, request, hold, sim.sequence).run() == EXPECTED


@pytest.fixture(scope="module")
def swap_host(testhost: TestHost) -> Iterator[tuple[Drivers, Reconciler, Desired, Published]]:
    with reconciler_on(testhost, settings()) as running:
        yield running


def _request(host: TestHost, name: str) -> Callable[[], bool]:
    """A request in a thread of its own: held by the socket until the instance is ready."""
    outcome: list[bool] = []

    def send() -> None:
        try:
            http_json(host.url(PORTS[name], "/env"), timeout=60)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            outcome.append(False)
        else:
            outcome.append(True)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()

    def answer() -> bool:
        thread.join(timeout=90)
        return outcome == [True]
    return answer


@pytest.mark.testhost
def test_the_test_host_gives_the_same_sequences(swap_host: Any) -> None:
    drivers, reconciler, desired, published = swap_host

    def hold(name: str) -> Callable[[], None]:
        connection = socket.create_connection((drivers.host.ip, PORTS[name]), timeout=60)
        return connection.close

    seen = Scenario(host_post(reconciler, desired), host_settle(published), lambda name: _request(drivers.host, name),
                    hold, published.statuses_of).run()
    assert seen == EXPECTED
    chat = published.by_name()["chat"]
    assert chat.info.on_demand is not None and chat.info.on_demand.exclusive_with == ["code"]
    dropin = drivers.host.guest_path("/run/systemd/system/ozwald-chat.service.d/50-ozwald-swap.conf")
    assert "ozwald-code.service" in dropin.read_text()
