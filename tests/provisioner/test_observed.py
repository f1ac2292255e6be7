# SPDX-License-Identifier: AGPL-3.0-or-later
"""ObservedUnits: the ordering rules between full reads, single-unit reads and job ends."""

from __future__ import annotations

import threading
import time

from ozwald.provisioner.observed import ObservedUnits
from ozwald.systemd.protocol import UnitState

UNIT = "ozwald-a.service"


def state(active: str, sub: str = "", unit: str = UNIT, load: str = "loaded", invocation: str = "0a") -> UnitState:
    return UnitState(name=unit, load_state=load, active_state=active, sub_state=sub, invocation_id=invocation,
                     state_change_usec=1)


def test_a_done_start_job_makes_the_unit_active_at_once_and_asks_for_a_real_read() -> None:
    observed = ObservedUnits()
    observed.replace_all({UNIT: state("inactive", "dead")}, observed.versions())
    observed.job_queued("/job/1", UNIT)
    assert observed.view().pending == {UNIT}
    assert observed.job_removed("/job/1", "done") == UNIT
    view = observed.view()
    assert view.pending == frozenset()
    settled = view.states[UNIT]
    assert (settled.active_state, settled.sub_state) == ("active", "running")
    assert settled.invocation_id == ""  # which container runs is not known until systemd is read
    assert settled.state_change_usec > 1
    assert observed.take_dirty(timeout=0) == {UNIT}


def test_a_read_begun_before_the_job_ended_does_not_pull_the_unit_back() -> None:
    observed = ObservedUnits()
    observed.job_queued("/job/1", UNIT)
    before = observed.versions()  # the refresher starts a read: systemd says activating
    observed.job_removed("/job/1", "done")  # meanwhile the job ends
    assert observed.put(state("activating", "start"), before) is False
    assert observed.view().states[UNIT].active_state == "active"
    assert observed.take_dirty(timeout=0) == {UNIT}  # read again
    assert observed.put(state("active", "running", invocation="0b"), observed.versions()) is True
    assert observed.view().states[UNIT].invocation_id == "0b"


def test_a_full_listing_keeps_newer_facts_and_forgets_unlisted_units() -> None:
    observed = ObservedUnits()
    other = "ozwald-b.service"
    observed.replace_all({UNIT: state("active", "running"), other: state("active", "running", unit=other)},
                         observed.versions())
    before = observed.versions()
    observed.job_queued("/job/2", UNIT)
    observed.job_removed("/job/2", "done")
    observed.replace_all({UNIT: state("deactivating", "stop-sigterm")}, before)  # b unloaded meanwhile
    view = observed.view()
    assert view.states[UNIT].sub_state == "running"
    assert other not in view.states


def test_units_with_a_queued_job_stay_dirty_until_the_job_ends() -> None:
    observed = ObservedUnits()
    other = "ozwald-b.service"
    observed.job_queued("/job/3", UNIT)
    observed.mark_dirty([UNIT, other])
    assert observed.take_dirty(timeout=0) == {other}
    assert observed.take_dirty(timeout=0) == set()
    observed.job_removed("/job/3", "failed")
    assert observed.take_dirty(timeout=0) == {UNIT}


def test_a_failed_job_claims_nothing_about_the_state() -> None:
    observed = ObservedUnits()
    observed.replace_all({UNIT: state("activating", "start")}, observed.versions())
    observed.job_queued("/job/4", UNIT)
    assert observed.job_removed("/job/4", "failed") == UNIT
    assert observed.view().states[UNIT].active_state == "activating"
    assert observed.view().pending == frozenset()


def test_a_job_that_ends_before_it_is_registered_is_settled_on_registration() -> None:
    observed = ObservedUnits()
    assert observed.job_removed("/job/5", "done") is None  # JobRemoved overtook enqueue()'s reply
    assert observed.job_queued("/job/5", UNIT) == "done"
    view = observed.view()
    assert view.pending == frozenset()
    assert view.states[UNIT].active_state == "active"


def test_other_jobs_are_forgotten_after_a_bound() -> None:
    observed = ObservedUnits()
    for number in range(1000):
        observed.job_removed(f"/job/x{number}", "done")
    assert observed.job_queued("/job/x0", UNIT) is None  # too old to remember: treated as still queued
    assert observed.job_queued("/job/x999", "ozwald-b.service") == "done"


def test_a_unit_read_as_not_loaded_is_forgotten() -> None:
    observed = ObservedUnits()
    observed.replace_all({UNIT: state("active", "running")}, observed.versions())
    assert observed.put(state("inactive", "dead", load="not-found"), observed.versions()) is True
    assert observed.view().states == {}


def test_stopping_a_unit_drops_its_queued_job() -> None:
    observed = ObservedUnits()
    observed.job_queued("/job/6", UNIT)
    observed.forget_jobs([UNIT])
    assert observed.view().pending == frozenset()
    assert observed.job_removed("/job/6", "canceled") is None
    assert observed.take_dirty(timeout=0) == {UNIT}


def test_take_dirty_wakes_when_another_thread_marks_a_unit() -> None:
    observed = ObservedUnits()
    timer = threading.Timer(0.05, observed.mark_dirty, args=([UNIT],))
    timer.start()
    started = time.monotonic()
    assert observed.take_dirty(timeout=120) == {UNIT}
    assert time.monotonic() - started < 60  # woken by the mark, not returned by the timeout
    timer.join()
    assert observed.take_dirty(timeout=0.01) == set()
