# SPDX-License-Identifier: AGPL-3.0-or-later
"""Waking and sleeping on purpose: the provisioner core on a real Redis (provisioner_kit), served by the real
API server, asked through the Python client. Only a desired on-demand instance reaches the reconciler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ozwald.api import create_server
from ozwald.client import OzwaldAPIError, OzwaldClient
from ozwald.errors import Exit
from ozwald.provisioner.core import Provisioner
from ozwald.provisioner.wake import NotDesired, NotListening, NotOnDemand
from ozwald.records import ActiveService, OnDemandInfo, ServiceInfo, ServiceRequest
from ozwald.state.resp import Client
from tests.support.provisioner_kit import StubReconciler, make_provisioner

KEY = "test-key-0123456789abcdef"
SETTINGS = """\
services:
  - name: chat
    image: vllm
    ports: ['18080:8000']
    on_demand: {idle_stop: 90s}
    profiles:
      always-on: {on_demand: false, ports: ['18081:8000']}
  - name: embed
    image: tei
  - name: docs
    type: source-files
    environment: {DIRECTORY: /srv}
"""


@pytest.fixture
def core(redis_client: Client, tmp_path: Path) -> Iterator[tuple[Provisioner, StubReconciler]]:
    provisioner, reconciler = make_provisioner(SETTINGS, redis_client, tmp_path)
    provisioner.start()
    try:
        provisioner.update([ServiceRequest(name="chat"), ServiceRequest(name="warm", service="chat",
                                                                        profile="always-on"),
                            ServiceRequest(name="embed"), ServiceRequest(name="docs")])
        yield provisioner, reconciler
    finally:
        provisioner.stop()


def test_a_desired_on_demand_instance_is_nudged(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    woke = provisioner.wake("chat")
    assert woke.status == "accepted"
    assert woke.message == ("wake of chat accepted: its container starts, then stops after 90 s without a "
                            "connection; its socket keeps listening")
    assert "its container stops" in provisioner.sleep("chat").message
    assert reconciler.nudges == [("chat", "wake"), ("chat", "sleep")]


def test_a_name_not_desired_is_refused_listing_the_desired_ones(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    with pytest.raises(NotDesired) as raised:
        provisioner.wake("chatt")
    assert str(raised.value) == ("no instance 'chatt' in the desired set (generation 1); desired: chat, docs, "
                                 "embed, warm")
    assert (raised.value.http_status, raised.value.exit_status) == (404, Exit.USAGE)
    assert reconciler.nudges == []


@pytest.mark.parametrize(("name", "service"), [("embed", "embed"), ("warm", "chat"), ("docs", "docs")])
def test_an_instance_not_on_demand_is_refused_saying_what_to_set(core: tuple[Provisioner, StubReconciler],
                                                                 name: str, service: str) -> None:
    provisioner, reconciler = core
    with pytest.raises(NotOnDemand) as raised:
        provisioner.sleep(name)
    assert str(raised.value) == f"instance {name!r} is not on demand; set on_demand on its service ({service})"
    assert raised.value.http_status == 409
    assert reconciler.nudges == []


def test_through_the_api_and_the_client(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    with create_server(provisioner, KEY, host="127.0.0.1", port=0) as server:
        server.start()
        client = OzwaldClient(server.url, KEY, timeout=5)
        assert client.wake("chat").status == "accepted"
        with pytest.raises(OzwaldAPIError) as refused:
            client.sleep("embed")
        assert refused.value.status == 409 and refused.value.exit_status == Exit.USAGE
        with pytest.raises(OzwaldAPIError) as unknown:
            client.wake("gone")
        assert unknown.value.status == 404 and "desired: chat, docs, embed, warm" in unknown.value.detail
    assert reconciler.nudges == [("chat", "wake")]


def test_a_wake_whose_socket_does_not_listen_is_refused_saying_why(core: tuple[Provisioner, StubReconciler]) -> None:
    """A wake connects to the port: with the socket down (its port taken by something else) it would reach
    whatever listens there."""
    provisioner, reconciler = core
    down = ActiveService(name="chat", service="chat", status="failed", info=ServiceInfo(
        reason="the socket ozwald-chat.socket is failed (resources)",
        on_demand=OnDemandInfo(socket="ozwald-chat.socket", socket_state="failed/failed", listen="18080",
                                idle_stop=90)))
    reconciler.publish([down])
    with pytest.raises(NotListening) as raised:
        provisioner.wake("chat")
    assert str(raised.value) == ("cannot wake chat: its socket is failed/failed (the socket ozwald-chat.socket is "
                                 "failed (resources)); Ozwald starts it again every 2 s, try then")
    assert raised.value.http_status == 409
    assert "its container stops" in provisioner.sleep("chat").message  # a sleep needs no socket
    listening = down.model_copy(update={"status": "idle", "info": down.info.model_copy(update={
        "on_demand": OnDemandInfo(socket="ozwald-chat.socket", socket_state="active/listening", listen="18080",
                                  idle_stop=90)})})
    reconciler.publish([listening])
    assert provisioner.wake("chat").status == "accepted"
    assert reconciler.nudges == [("chat", "sleep"), ("chat", "wake")]
