# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner core (what the API calls) on a real Redis, without systemd: see provisioner_kit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ozwald.config import resolve
from ozwald.provisioner.core import Provisioner
from ozwald.quadlet import render_unit
from ozwald.records import ActiveService, AdmissionError, CoreUnavailable, ServiceRequest, UpdateError
from ozwald.state.resp import Client
from tests.support.provisioner_kit import StubReconciler, make_provisioner
from tests.support.redis_server import RedisServer

SETTINGS = """\
services:
  - name: llm
    image: vllm
    environment: {MODEL: a}
    resources: {memory_gb: 4}
    profiles:
      big:
        environment: {MODEL: b}
        resources: {memory_gb: 64}
  - name: sources
    type: source-files
    environment: {DIRECTORY: /srv}
"""


@pytest.fixture
def core(redis_client: Client, tmp_path: Path) -> Iterator[tuple[Provisioner, StubReconciler]]:
    provisioner, reconciler = make_provisioner(SETTINGS, redis_client, tmp_path)
    provisioner.start()
    try:
        yield provisioner, reconciler
    finally:
        provisioner.stop()


def test_update_stores_the_set_with_the_next_generation_and_wakes_the_reconciler(
        core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    first = provisioner.update([ServiceRequest(name="llm")])
    second = provisioner.update([ServiceRequest(name="llm"), ServiceRequest(name="docs", service="sources")])
    assert (first.generation, second.generation) == (1, 2)
    assert [(i.name, i.service) for i in provisioner.desired.read().instances] == [("llm", "llm"), ("docs", "sources")]
    deadline = time.monotonic() + 5
    while 2 not in reconciler.woken and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {1, 2} <= set(reconciler.woken)


def test_update_refuses_bad_items_and_changes_nothing(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, _ = core
    provisioner.update([ServiceRequest(name="llm")])
    with pytest.raises(UpdateError) as raised:
        provisioner.update([ServiceRequest(name="llm"), ServiceRequest(name="x", service="nope")])
    assert (raised.value.index, raised.value.field) == (1, "service")
    assert provisioner.desired.read().generation == 1


def test_a_set_that_does_not_fit_is_refused_unless_forced(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, _ = core
    with pytest.raises(AdmissionError) as raised:
        provisioner.update([ServiceRequest(name="llm", profile="big")])
    assert "does not fit" in raised.value.detail["message"] and raised.value.detail["conflicts"]
    assert provisioner.desired.read().generation == 0
    assert provisioner.update([ServiceRequest(name="llm", profile="big")], force=True).generation == 1


def test_plan_says_what_would_change_and_applies_nothing(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    reconciler.units.write(render_unit(resolve(provisioner.settings, "llm"), "llm"), persistent=False)
    entries = provisioner.plan([ServiceRequest(name="llm", profile="big"), ServiceRequest(name="new", service="llm"),
                                ServiceRequest(name="docs", service="sources")])
    by_name = {e.name: e for e in entries}
    assert by_name["llm"].action == "restart" and by_name["llm"].reason == "restart: profile - → big changes MODEL"
    assert by_name["new"].action == "start"
    assert by_name["docs"].action == "keep" and by_name["docs"].reason == "keep: a resource, not a container"
    assert by_name["llm"].fit is not None and "gpus" in by_name["llm"].fit
    assert by_name["llm"].fit["does_not_fit"]
    assert provisioner.desired.read().generation == 0


def test_watch_active_blocks_until_the_reconciler_publishes(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, reconciler = core
    starting = [ActiveService(name="llm", service="llm", status="starting")]
    reconciler.publish(starting)
    revision, services = provisioner.watch_active(None, 0)
    assert services == starting
    available = [ActiveService(name="llm", service="llm", status="available")]
    threading.Timer(0.2, reconciler.publish, [available]).start()
    began = time.monotonic()
    newer, services = provisioner.watch_active(revision, 5)
    assert newer == revision + 1 and services == available and time.monotonic() - began < 4
    assert provisioner.watch_active(newer, 0.05) == (newer, available)  # nothing new: same revision
    reconciler.publish(available)  # unchanged statuses do not bump the revision
    assert provisioner.watch_active(None, 0)[0] == newer
    assert provisioner.status_writer.flush()
    assert provisioner.statuses.read_all() == available  # cached for processes that have not reconciled


def test_configured_services_and_health(core: tuple[Provisioner, StubReconciler]) -> None:
    provisioner, _ = core
    assert [s["name"] for s in provisioner.configured_services()] == ["llm", "sources"]
    assert provisioner.health() == {"cache": "ok", "systemd": "ok", "reconciler": "ok"}


def test_a_lost_cache_is_reported_as_unavailable(core: tuple[Provisioner, StubReconciler],
                                                 redis_server: RedisServer) -> None:
    provisioner, _ = core
    redis_server.stop()
    try:
        with pytest.raises(CoreUnavailable):
            provisioner.update([ServiceRequest(name="llm")])
        assert provisioner.health()["cache"] == "unreachable"
        with pytest.raises(CoreUnavailable):
            provisioner.profile_requests()
    finally:
        redis_server.start()
