# SPDX-License-Identifier: AGPL-3.0-or-later
"""The status rules, table by table: what an orchestrator routes traffic on must be what runs."""

from __future__ import annotations

from typing import Any

import pytest

from ozwald.provisioner.status import (
    Observed,
    RunningSpec,
    SocketObserved,
    describe,
    describe_on_demand,
    on_demand_status,
    status_of,
)
from ozwald.records import DesiredInstance, OnDemandInfo
from ozwald.systemd.protocol import UnitState

UNIT = "ozwald-m.service"
NEW, OLD = "new0", "old0"
INSTANCE = DesiredInstance(name="m", service="m", variety="cpu-only", profile="large")
RUNS_NEW = RunningSpec(NEW, "m", "cpu-only", "large")
RUNS_OLD = RunningSpec(OLD, "m", "cpu-only", "small")


def state(active: str, sub: str = "running", **extra: Any) -> UnitState:
    return UnitState(name=UNIT, load_state="loaded", active_state=active, sub_state=sub, **extra)


@pytest.mark.parametrize(("observed", "expected"), [
    # ready and running the wanted spec: the only `available`
    (Observed(state("active"), RUNS_NEW), "available"),
    # the old container still serves after the new spec was written: never `available` under the new one
    (Observed(state("active"), RUNS_OLD), "starting"),
    # what runs cannot be told (a change interrupted by a provisioner restart)
    (Observed(state("active"), None), "starting"),
    # a job Ozwald queued has not ended
    (Observed(state("active"), RUNS_NEW, job="restart"), "starting"),
    (Observed(state("activating", "start-post"), RUNS_NEW, job="start"), "starting"),
    (Observed(state("deactivating", "stop-sigterm"), RUNS_OLD, job="restart"), "starting"),
    # systemd restarting it after a crash
    (Observed(state("activating", "auto-restart", n_restarts=2), RUNS_NEW), "starting"),
    # ended
    (Observed(state("failed", "failed", result="exit-code"), None), "failed"),
    (Observed(state("inactive", "dead"), None), "failed"),
    (Observed(state("failed", "failed"), None, job="start"), "starting"),  # retried by a new generation
    (Observed(None, None), "failed"),  # not loaded and nothing queued: Quadlet did not generate it
    (Observed(None, None, job="start"), "starting"),
    (Observed(None, None, refused="systemd refused to start ozwald-m.service: nope"), "failed"),
])
def test_status_table(observed: Observed, expected: str) -> None:
    assert status_of(observed, NEW) == expected


def test_the_old_spec_is_reported_while_it_runs_with_the_target_pending() -> None:
    item = describe(INSTANCE, NEW, Observed(state("active"), RUNS_OLD, job="restart"), 7, UNIT)
    assert (item.status, item.variety, item.profile) == ("starting", "cpu-only", "small")
    assert item.info["running_spec_hash"] == OLD and item.info["spec_hash"] == NEW
    assert item.info["pending"] == {"variety": "cpu-only", "profile": "large", "spec_hash": NEW, "job": "restart"}
    assert "container_id" not in item.info


def test_once_the_new_spec_runs_its_fields_are_reported() -> None:
    item = describe(INSTANCE, NEW, Observed(state("active", invocation_id="ab"), RUNS_NEW, container_id="c1"), 7,
                    UNIT)
    assert (item.status, item.profile) == ("available", "large")
    assert "pending" not in item.info
    assert item.info["container_id"] == "c1" and item.info["invocation"] == "ab"


def test_a_new_container_starting_reports_the_target() -> None:
    item = describe(INSTANCE, NEW, Observed(state("activating", "start"), RUNS_NEW, job="restart"), 7, UNIT)
    assert (item.status, item.profile) == ("starting", "large")


def test_a_crash_loop_says_how_many_restarts_and_the_last_exit() -> None:
    crashed = state("activating", "auto-restart", n_restarts=3, exec_main_code=1, exec_main_status=1,
                    exec_main_start_usec=1_000_000, exec_main_exit_usec=3_000_000)
    item = describe(INSTANCE, NEW, Observed(crashed, RUNS_NEW), 7, UNIT)
    assert item.status == "starting" and item.info["restarting"] is True
    assert item.info["reason"] == "restarting after a crash (3 restarts so far); last run exited 1 after 2.0 s"


def test_failed_always_carries_a_reason() -> None:
    item = describe(INSTANCE, NEW, Observed(state("failed", "failed", result="exit-code"), None,
                                            failure="exited 3 after 0.4 s: boom"), 7, UNIT)
    assert item.status == "failed" and item.info["reason"] == "exited 3 after 0.4 s: boom"
    unknown = describe(INSTANCE, NEW, Observed(state("inactive", "dead"), None), 7, UNIT)
    assert unknown.status == "failed" and unknown.info["reason"]


LISTENING = UnitState(name="ozwald-m.socket", load_state="loaded", active_state="active", sub_state="listening")
SOCKET_INFO = OnDemandInfo(socket="ozwald-m.socket", listen="8090", idle_stop=5.0)


def socket(sock: UnitState | None = LISTENING, job: str | None = None) -> SocketObserved:
    return SocketObserved(sock, job, SOCKET_INFO)


@pytest.mark.parametrize(("observed", "sock", "expected"), [
    # the socket listens and no container runs: the only `idle`
    (Observed(None, None), socket(), "idle"),
    (Observed(state("inactive", "dead"), None), socket(), "idle"),
    # a connection started it, or a wake
    (Observed(state("activating", "start"), RUNS_NEW), socket(), "starting"),
    (Observed(state("inactive", "dead"), None, job="wake"), socket(), "starting"),
    (Observed(state("active"), RUNS_NEW), socket(), "available"),
    # stopping for idleness: still runs, so never idle
    (Observed(state("deactivating", "stop-sigterm"), None), socket(), "stopping"),
    # still running from a file that is gone (systemd: not-found): not idle either
    (Observed(UnitState(name=UNIT, load_state="not-found", active_state="deactivating", sub_state="stop-sigterm"),
              None), socket(), "stopping"),
    # its start failed: systemd cleans up on its way to `failed` (the test host shows deactivating first)
    (Observed(state("deactivating", "stop-post", result="exit-code"), None), socket(), "starting"),
    # a failed start, or a socket that is down
    (Observed(state("failed", "failed", result="exit-code"), None), socket(), "failed"),
    (Observed(None, None), socket(UnitState(name="ozwald-m.socket", load_state="loaded", active_state="failed",
                                            sub_state="failed", result="resources")), "failed"),
    (Observed(None, None), socket(None), "failed"),
    (Observed(None, None), socket(None, job="start"), "starting"),
    (Observed(None, None, job="start once the stops end"), socket(None), "starting"),
])
def test_on_demand_status_table(observed: Observed, sock: SocketObserved, expected: str) -> None:
    assert on_demand_status(observed, sock, NEW) == expected


def test_an_idle_or_failed_socket_says_why() -> None:
    idle = describe_on_demand(INSTANCE, NEW, Observed(None, None), socket(), 1, UNIT)
    assert idle.status == "idle" and "listens on 8090" in str(idle.info["reason"])
    assert idle.info.on_demand is not None and idle.info.on_demand.socket_state == "active/listening"
    down = describe_on_demand(INSTANCE, NEW, Observed(None, None), socket(UnitState(
        name="ozwald-m.socket", load_state="loaded", active_state="failed", sub_state="failed",
        result="trigger-limit-hit")), 1, UNIT)
    assert down.status == "failed"
    assert down.info["reason"] == ("the socket ozwald-m.socket is failed (trigger-limit-hit): connections are "
                                   "refused until Ozwald starts it again")
