# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner core (what the API calls) on a real Redis, without systemd: see provisioner_kit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ozwald.config import resolve
from ozwald.provisioner.core import Provisioner
from ozwald.quadlet import render_unit
from ozwald.records import ActiveService, AdmissionError, DesiredSet, ServiceRequest, UpdateError
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


def test_with_redis_down_updates_and_gets_are_answered_and_the_copies_come_back(
        redis_client: Client, redis_server: RedisServer, tmp_path: Path) -> None:
    provisioner, reconciler = make_provisioner(SETTINGS, redis_client, tmp_path)
    provisioner.status_writer.keep_every = 0.05
    provisioner.start()
    try:
        provisioner.update([ServiceRequest(name="llm")])
        redis_server.stop()
        try:
            second = provisioner.update([ServiceRequest(name="docs", service="sources")])
            assert second.generation == 2 and provisioner.desired.read() == second
            assert 2 in reconciler.woken
            assert provisioner.health()["cache"] == "unreachable"
            request = provisioner.enqueue_profile({"service": "llm"})["request_id"]
            assert [r["request_id"] for r in provisioner.profile_requests()] == [request]
        finally:
            redis_server.start()  # empty: it ran without persistence
        deadline = time.monotonic() + 10  # the status writer's thread copies the files again, unasked
        while (redis_client.get("ozwald:test:desired") is None or redis_client.get("ozwald:test:profile-queue") is None
               ) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert DesiredSet.model_validate_json(str(redis_client.get("ozwald:test:desired"))) == second
        assert request in str(redis_client.get("ozwald:test:profile-queue"))
        assert provisioner.health()["cache"] == "ok"
        assert provisioner.update([]).generation == 3
    finally:
        provisioner.stop()


def test_on_demand_instances_that_do_not_fit_together_are_admitted_alone_and_swap(
        redis_client: Client, tmp_path: Path) -> None:
    """Each needs 60 % of this host's memory: together they would not fit, each alone does."""
    gib = round(psutil.virtual_memory().total / 1024**3 * 0.6, 1)
    services = "services:\n" + "".join(
        f"  - name: {name}\n    image: x\n    on_demand: true\n    ports: ['{port}:8000']\n"
        f"    resources: {{memory_gb: {gib}}}\n" for name, port in (("chat", 18090), ("code", 18091)))
    provisioner, _ = make_provisioner(services, redis_client, tmp_path)
    items = [ServiceRequest(name="chat"), ServiceRequest(name="code")]
    entries = {e.name: e for e in provisioner.plan(items)}
    assert entries["chat"].fit is not None and entries["chat"].fit["exclusive_with"] == ["code"]
    assert "does_not_fit" not in entries["chat"].fit
    stored = provisioner.update(items).by_name()
    assert (stored["chat"].exclusive_with, stored["code"].exclusive_with) == (("code",), ("chat",))
