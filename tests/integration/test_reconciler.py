# SPDX-License-Identifier: AGPL-3.0-or-later
"""The reconciler against real systemd and Podman: start, change, remove, fail, adopt."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ozwald.config import Settings
from ozwald.provisioner.reconciler import Reconciler
from ozwald.records import ActiveService, DesiredInstance, DesiredSet
from ozwald.systemd import SystemdClient
from tests.integration.driver_kit import PYTHON_HEALTH, Drivers, drivers_for, http_json, server
from tests.testhost.harness import TestHost

SETTINGS = Settings.model_validate({"services": [
    server("echo", ports=["8010:8000"], health=PYTHON_HEALTH, environment={"MODEL_NAME": "base"},
           profiles={"big": {"environment": {"MODEL_NAME": "big", "MAX_MODEL_LEN": "45000"}},
                     "small": {"environment": {"MODEL_NAME": "small"}}}),
    server("other", ports=["8011:8000"], health=PYTHON_HEALTH),
    server("broken", environment={"EXIT_CODE": "4"}),
    {"name": "docs", "type": "source-files", "environment": {"DIRECTORY": "sources/"}},
]})


class Published:
    """Collects what the reconciler publishes and lets a test wait for a condition, without polling."""

    def __init__(self) -> None:
        self.latest: list[ActiveService] = []
        self.history: list[list[ActiveService]] = []
        self._cond = threading.Condition()

    def __call__(self, services: list[ActiveService]) -> None:
        with self._cond:
            self.latest = services
            self.history.append(services)
            self._cond.notify_all()

    def statuses_of(self, name: str) -> list[str]:
        """The instance's published statuses in order, repeats folded."""
        with self._cond:
            seen = [s.status for services in self.history for s in services if s.name == name]
        return [status for index, status in enumerate(seen) if index == 0 or seen[index - 1] != status]

    def by_name(self) -> dict[str, ActiveService]:
        return {s.name: s for s in self.latest}

    def wait(self, check: Callable[[dict[str, ActiveService]], bool], timeout: float = 60) -> dict[str, ActiveService]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.by_name()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out; last published: {self.latest}")
                self._cond.wait(remaining)
            return self.by_name()


class Desired:
    def __init__(self) -> None:
        self.value = DesiredSet()

    def set(self, *instances: DesiredInstance) -> None:
        self.value = DesiredSet(generation=self.value.generation + 1, instances=instances)

    def __call__(self) -> DesiredSet:
        return self.value


@pytest.fixture(scope="module")
def drivers(testhost: TestHost) -> Iterator[Drivers]:
    with drivers_for(testhost) as kit:
        yield kit


def make(drivers: Drivers, desired: Desired, published: Published) -> Reconciler:
    return Reconciler(SETTINGS, desired, drivers.systemd, drivers.store, published, podman=drivers.podman,
                      journal_prefix=drivers.journal_prefix, resync_interval=30)


def test_converges_through_changes_failures_and_restarts(drivers: Drivers) -> None:
    desired, published = Desired(), Published()
    reconciler = make(drivers, desired, published)
    reconciler.start()
    try:
        desired.set(DesiredInstance(name="echo", service="echo", profile="big"),
                    DesiredInstance(name="other", service="other"),
                    DesiredInstance(name="docs", service="docs"))
        reconciler.wake()
        # Statuses are published first; container ids follow from Podman in a second publish.
        state = published.wait(lambda s: all(s.get(n) is not None and s[n].status == "available"
                                             and s[n].info.get("container_id") for n in ("echo", "other")))
        assert state["docs"].status == "available" and state["docs"].info["unit"] is None
        assert http_json(drivers.host.url(8010, "/env"))["MAX_MODEL_LEN"] == "45000"
        other_id = state["other"].info["container_id"]
        echo_id = state["echo"].info["container_id"]
        assert other_id and echo_id

        # Plan preview says what a change would do, and changes nothing.
        preview = reconciler.preview(DesiredSet(generation=99, instances=(
            DesiredInstance(name="echo", service="echo", profile="small"),
            DesiredInstance(name="other", service="other"))))
        reasons = {e.name: (e.action, e.reason) for e in preview}
        assert reasons["echo"] == ("restart", "restart: profile big → small changes MAX_MODEL_LEN, MODEL_NAME")
        assert reasons["other"] == ("keep", "keep: unchanged and active")

        # Change a profile: restarted with the new env; the other instance is left alone.
        desired.set(DesiredInstance(name="echo", service="echo", profile="small"),
                    DesiredInstance(name="other", service="other"))
        reconciler.wake()
        state = published.wait(lambda s: s["echo"].status == "available" and s["echo"].profile == "small"
                               and s["echo"].info.get("container_id") not in (None, echo_id))
        env = http_json(drivers.host.url(8010, "/env"))
        assert env["MODEL_NAME"] == "small" and "MAX_MODEL_LEN" not in env
        assert state["other"].info["container_id"] == other_id
        assert "docs" not in state

        # Remove one; add one that fails.
        desired.set(DesiredInstance(name="other", service="other"), DesiredInstance(name="broken", service="broken"))
        reconciler.wake()
        state = published.wait(lambda s: "echo" not in s and s.get("broken") is not None
                               and s["broken"].status == "failed")
        assert state["broken"].info["reason"].startswith("exited 4 after ")
        assert "EXIT_CODE=4" in state["broken"].info["reason"]
        assert not drivers.host.guest_path("/run/containers/systemd/ozwald-echo.container").exists()
        assert drivers.systemd.unit_state("ozwald-echo.service").load_state == "not-found"
        assert state["other"].info["container_id"] == other_id
    finally:
        reconciler.stop()

    # A new provisioner process adopts what runs and removes what nobody wants.
    drivers.host.write_file("/run/containers/systemd/ozwald-orphan.container",
                            drivers.store.existing()["other"].text.replace("ozwald-other", "ozwald-orphan")
                            .replace("8011:8000", "8012:8000"))
    drivers.systemd.reload()
    drivers.systemd.start_unit("ozwald-orphan.service", timeout=60)
    desired2, published2 = Desired(), Published()
    desired2.set(DesiredInstance(name="other", service="other"))
    adopter = make(drivers, desired2, published2)
    report = adopter.run_once()
    actions = {e.name: e.action for e in report.entries}
    assert actions == {"other": "keep", "orphan": "stop", "broken": "stop"}
    assert drivers.podman.container("ozwald-other").id == other_id  # type: ignore[union-attr]
    assert sorted(c.name for c in drivers.podman.containers()) == ["ozwald-other"]
    assert sorted(drivers.store.existing()) == ["other"]
    assert published2.by_name()["other"].status == "available"
    desired2.set()
    adopter.run_once()
    assert drivers.podman.containers() == []


def test_failed_instances_wait_for_a_new_generation(drivers: Drivers) -> None:
    desired, published = Desired(), Published()
    reconciler = make(drivers, desired, published)
    desired.set(DesiredInstance(name="broken", service="broken"))
    reconciler.run_once()  # no worker threads here: wait on systemd, then refresh by hand
    first = drivers.systemd.wait_for("ozwald-broken.service", lambda s: s.failed, 60).state_change_usec
    assert reconciler.refresh_statuses()[0].status == "failed"
    resync = reconciler.run_once()  # same generation: a resync must not restart it
    assert [(e.action, e.reason) for e in resync.entries] == [
        ("keep", "keep: failed; post the desired set to retry")]
    assert drivers.systemd.unit_state("ozwald-broken.service").state_change_usec == first
    desired.set(DesiredInstance(name="broken", service="broken"))  # the orchestrator posts again
    again = reconciler.run_once()
    assert [e.action for e in again.entries] == ["start"]
    desired.set()
    reconciler.run_once()


def test_one_update_is_one_pass_and_an_idle_reconciler_reads_nothing(drivers: Drivers) -> None:
    desired, published = Desired(), Published()
    reconciler = make(drivers, desired, published)
    reconciler.start()
    try:
        desired.set(DesiredInstance(name="other", service="other"))
        reconciler.wake(desired.value.generation)
        published.wait(lambda s: s.get("other") is not None and s["other"].status == "available"
                       and s["other"].info.get("container_id") is not None)
        # Once available, never back to starting: a slow read must not overwrite the job's news.
        assert published.statuses_of("other") == ["starting", "available"]

        time.sleep(1.0)  # let the last signals of the start settle
        passes, reads, publishes = reconciler.passes, reconciler.unit_reads, len(published.history)
        time.sleep(2.0)
        assert (reconciler.passes, reconciler.unit_reads, len(published.history)) == (passes, reads, publishes)

        # The same update announced twice is one pass.
        desired.set(DesiredInstance(name="other", service="other"))
        reconciler.wake(desired.value.generation)
        reconciler.wake(desired.value.generation)
        published.wait(lambda s: s["other"].info["generation"] == desired.value.generation)
        time.sleep(1.0)
        assert reconciler.passes == passes + 1
        assert reconciler.last_report is not None
        assert [e.action for e in reconciler.last_report.entries] == ["keep"]
    finally:
        reconciler.stop()
        desired.set()
        reconciler.run_once()
    assert drivers.podman.containers() == []


def test_a_lost_bus_connection_is_reported_not_hidden(drivers: Drivers) -> None:
    """A dead connection can deliver no signal: the reconciler says so, and the process exits to be restarted."""
    own = SystemdClient(drivers.host.bus_address)
    reconciler = Reconciler(SETTINGS, Desired(), own, drivers.store, Published(), resync_interval=30)
    reconciler.start()
    try:
        assert reconciler.alive and not reconciler.bus_lost.is_set()
        # Closed between calls: a call in flight when the connection closes waits out its timeout (30 s) in
        # jeepney's router before the loop sees the loss.
        assert reconciler.first_pass_done.wait(30)
        own.close()
        assert reconciler.bus_lost.wait(30)
        assert not reconciler.alive
    finally:
        reconciler.stop()


def test_an_unwanted_unit_started_by_hand_is_stopped_without_waiting_for_the_resync(drivers: Drivers) -> None:
    desired, published = Desired(), Published()
    reconciler = Reconciler(SETTINGS, desired, drivers.systemd, drivers.store, published, podman=drivers.podman,
                            journal_prefix=drivers.journal_prefix, resync_interval=600)
    reconciler.start()
    try:
        desired.set(DesiredInstance(name="other", service="other"))
        reconciler.wake(desired.value.generation)
        published.wait(lambda s: s.get("other") is not None and s["other"].status == "available")
        passes = reconciler.passes
        drivers.host.write_file("/run/containers/systemd/ozwald-stray.container",
                                drivers.store.existing()["other"].text.replace("ozwald-other", "ozwald-stray")
                                .replace("8011:8000", "8013:8000"))
        drivers.systemd.reload()
        drivers.systemd.enqueue("start", ["ozwald-stray.service"])  # as an operator might, by hand
        drivers.systemd.wait_for("ozwald-stray.service", lambda s: s.load_state != "loaded", 60)
        assert reconciler.passes > passes
        assert "stray" not in drivers.store.existing()
        assert published.by_name()["other"].status == "available"
        assert sorted(c.name for c in drivers.podman.containers()) == ["ozwald-other"]
    finally:
        reconciler.stop()
        desired.set()
        reconciler.run_once()
    assert drivers.podman.containers() == []


def test_removed_instances_leave_when_their_stop_ends_without_a_unit_read(drivers: Drivers) -> None:
    """A stop job that ended "done" says the unit is down: an instance nobody wants leaves the statuses then,
    with no read of the unit (while systemd stops 100 containers, such reads took 7-19 s a batch)."""
    desired, published = Desired(), Published()
    reconciler = make(drivers, desired, published)
    reconciler.start()
    try:
        desired.set(DesiredInstance(name="echo", service="echo"), DesiredInstance(name="other", service="other"))
        reconciler.wake(desired.value.generation)
        published.wait(lambda s: all(n in s and s[n].status == "available" for n in ("echo", "other")))
        time.sleep(1.0)  # the last signals of the starts settle
        reads, history = reconciler.unit_reads, len(published.history)
        desired.set()
        reconciler.wake(desired.value.generation)
        published.wait(lambda s: not s)
        for unit in ("ozwald-echo.service", "ozwald-other.service"):  # gone from the statuses: really down
            state = drivers.systemd.unit_state(unit)
            assert state.load_state != "loaded" or state.active_state in ("inactive", "failed"), state
        assert reconciler.unit_reads == reads
        seen = [{s.name: s.status for s in services} for services in published.history[history:]]
        assert all(set(statuses.values()) <= {"available", "stopping"} for statuses in seen)
        assert any(statuses.get("echo") == "stopping" for statuses in seen)
        deadline = time.monotonic() + 30
        while drivers.store.existing() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert drivers.store.existing() == {}
    finally:
        reconciler.stop()
        desired.set()
        reconciler.run_once()
    assert drivers.podman.containers() == []
