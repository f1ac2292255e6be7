# SPDX-License-Identifier: AGPL-3.0-or-later
"""The status observer: what it counts from a sequence of published lists, with hand-driven clocks."""

from __future__ import annotations

from typing import Any

from ozwald.provisioner.observe import Histogram, StatusObserver
from ozwald.records import ActiveService, ServiceInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(name: str, state: str, generation: int, restarts: int = 0, **info: Any) -> ActiveService:
    return ActiveService(name=name, service="svc", variety="cpu-only", profile=None, status=state,  # type: ignore[arg-type]
                         info=ServiceInfo.model_validate({"generation": generation, "restarts": restarts, **info}))


def observer() -> tuple[StatusObserver, Clock]:
    clock = Clock()
    return StatusObserver(wall=lambda: clock.now + 1_700_000_000, monotonic=clock), clock


def test_restarts_only_rise_across_systemd_resetting_its_count() -> None:
    obs, _ = observer()
    obs.observe([status("a", "available", 1, restarts=0)])
    obs.observe([status("a", "starting", 1, restarts=2, restarting=True)])
    obs.observe([status("a", "available", 1, restarts=3)])
    obs.observe([status("a", "starting", 2, restarts=0, pending={"job": "restart"})])  # Ozwald restarted it
    obs.observe([status("a", "available", 2, restarts=1)])
    assert obs.snapshot().instances["a"].restarts_total == 4


def test_failures_count_each_entry_into_failed() -> None:
    obs, _ = observer()
    obs.observe([status("a", "starting", 1, pending={"job": "start"})])
    obs.observe([status("a", "failed", 1, reason="exited 1")])
    obs.observe([status("a", "failed", 1, reason="exited 1 (re-read)")])
    obs.observe([status("a", "starting", 2, pending={"job": "start"})])
    obs.observe([status("a", "failed", 2, reason="exited 1")])
    assert obs.snapshot().instances["a"].failures_total == 2


def test_start_time_runs_from_the_post_to_available() -> None:
    obs, clock = observer()
    obs.observe([])  # the first publish is the baseline
    obs.desired_changed(5)
    clock.now += 0.5
    obs.observe([status("a", "starting", 5, pending={"job": "start"})])
    clock.now += 12.0
    obs.observe([status("a", "available", 5)])
    histogram = obs.snapshot().start_seconds["svc"]
    assert histogram.count == 1 and histogram.total == 12.5
    assert dict(histogram.cumulative())[10.0] == 0 and dict(histogram.cumulative())[30.0] == 1


def test_a_swap_is_timed_from_its_generation_and_a_crash_restart_is_not() -> None:
    obs, clock = observer()
    obs.observe([status("a", "available", 1)])
    obs.observe([status("a", "starting", 1, restarts=1, restarting=True, pending={"job": None})])
    clock.now += 3
    obs.observe([status("a", "available", 1, restarts=1)])
    assert obs.snapshot().start_seconds == {}
    obs.desired_changed(2)
    obs.observe([status("a", "available", 2, restarts=1)])  # published before the restart is queued
    clock.now += 1
    obs.observe([status("a", "starting", 2, pending={"job": "restart"})])
    clock.now += 4
    obs.observe([status("a", "available", 2)])
    assert obs.snapshot().start_seconds["svc"].total == 5.0


def test_an_update_through_another_process_is_timed_from_its_first_publish() -> None:
    obs, clock = observer()
    obs.observe([status("a", "available", 1)])
    clock.now += 100
    obs.observe([status("a", "starting", 2, pending={"job": "restart"})])
    clock.now += 2
    obs.observe([status("a", "available", 2)])
    assert obs.snapshot().start_seconds["svc"].total == 2.0


def test_a_failed_start_is_not_timed_and_an_unchanged_instance_is_not_either() -> None:
    obs, clock = observer()
    obs.observe([status("a", "available", 1), status("b", "available", 1)])
    obs.desired_changed(2)
    obs.observe([status("a", "starting", 2, pending={"job": "restart"}), status("b", "available", 2)])
    clock.now += 2
    obs.observe([status("a", "failed", 2), status("b", "available", 2)])
    assert obs.snapshot().start_seconds == {}


def test_transition_time_and_forgetting_removed_instances() -> None:
    obs, clock = observer()
    obs.observe([status("a", "starting", 1), status("b", "available", 1)])
    clock.now += 7
    obs.observe([status("a", "available", 1), status("b", "available", 1)])
    seen = obs.snapshot().instances
    assert seen["a"].transition_at == 1_700_001_007.0 and seen["b"].transition_at == 1_700_001_000.0
    obs.observe([status("b", "available", 2)])
    assert set(obs.snapshot().instances) == {"b"}


def test_applied_generation_is_the_newest_whose_instances_all_settled() -> None:
    obs, _ = observer()
    obs.observe([status("a", "available", 3)])
    assert obs.snapshot().applied_generation == 3
    obs.observe([status("a", "starting", 4, pending={"job": "restart"})])
    assert obs.snapshot().applied_generation == 3
    obs.observe([status("a", "failed", 4)])
    assert obs.snapshot().applied_generation == 4
    obs.observe([status("a", "stopping", 5)])
    assert obs.snapshot().applied_generation == 4
    obs.observe([], read_generation=5)  # everything stopped: an empty set, settled
    assert obs.snapshot().applied_generation == 5


def test_histogram_buckets_are_cumulative_with_inf_last() -> None:
    histogram = Histogram((1.0, 10.0))
    for value in (0.5, 1.0, 3.0, 50.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(1.0, 2), (10.0, 3), (float("inf"), 4)]
    assert histogram.count == 4 and histogram.total == 54.5


def test_an_idle_on_demand_instance_has_settled_and_its_wake_is_not_a_start_time() -> None:
    """`idle` is ready (the socket listens): the generation is applied, and the container a connection starts
    later is no desired change, so it adds nothing to the start-time histogram."""
    obs, clock = observer()
    obs.observe([])
    obs.desired_changed(3)
    obs.observe([status("a", "starting", 3, pending={"job": "start"})])
    obs.observe([status("a", "idle", 3)])
    assert obs.snapshot().applied_generation == 3
    clock.now += 3600.0
    obs.observe([status("a", "starting", 3)])  # a connection came
    obs.observe([status("a", "available", 3)])
    assert "svc" not in obs.snapshot().start_seconds
