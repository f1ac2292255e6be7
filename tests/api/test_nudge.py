# SPDX-License-Identifier: AGPL-3.0-or-later
"""POST /srv/services/active/<name>/wake and /sleep through the real server: what is accepted, what is refused
and why, and `?wait=` answering the instance's status once it settled."""

from __future__ import annotations

import pytest

from tests.api.conftest import ON_DEMAND, Api, FakeCore

UPDATE = "/srv/services/active/update/"
WAKE = "/srv/services/active/chat/wake"
SLEEP = "/srv/services/active/chat/sleep"


@pytest.fixture
def desired(api: Api, core: FakeCore) -> FakeCore:
    """`chat` (on demand) and `plain` (not) are desired."""
    reply = api.post(UPDATE, [ON_DEMAND, {"name": "plain", "service": "fiction-sources"}])
    assert reply.status == 202
    return core


def test_wake_and_sleep_are_accepted_and_reach_the_core(api: Api, desired: FakeCore) -> None:
    woke = api.post(WAKE)
    assert woke.status == 202
    assert woke.json() == {"status": "accepted", "message": "wake of chat accepted"}
    slept = api.post(SLEEP + "/")  # the slash twin
    assert slept.status == 202 and slept.json()["status"] == "accepted"
    assert desired.nudges == [("chat", "wake"), ("chat", "sleep")]


def test_an_instance_not_desired_is_404_naming_it(api: Api, desired: FakeCore) -> None:
    reply = api.post("/srv/services/active/nope/wake")
    assert reply.status == 404
    assert "'nope'" in reply.json()["detail"]
    assert desired.nudges == []


def test_an_instance_not_on_demand_is_409_saying_what_to_set(api: Api, desired: FakeCore) -> None:
    reply = api.post("/srv/services/active/plain/sleep")
    assert reply.status == 409
    assert reply.json() == {"detail": "instance 'plain' is not on demand; set on_demand on its service"}
    assert desired.nudges == []


@pytest.mark.parametrize(("path", "reached"), [(WAKE, "available"), (SLEEP, "idle")])
def test_wait_answers_the_status_the_instance_reached(api: Api, desired: FakeCore, path: str, reached: str) -> None:
    def settle(name: str, operation: str) -> None:  # as the reconciler publishes: a step, then the outcome
        desired.set_status(name, "stopping" if operation == "sleep" else "starting")
        desired.set_status(name, reached)  # type: ignore[arg-type]

    desired.on_nudge = settle
    reply = api.post(path + "?wait=30")
    assert reply.status == 200
    body = reply.json()
    assert body["settled"] is True and body["instance"]["name"] == "chat" and body["instance"]["status"] == reached
    assert body["instance"]["variety"] == "cpu-only" and "profile" in body["instance"]  # its own nulls are kept
    assert int(reply.header("X-Ozwald-Revision") or 0) == desired.revision


def test_wait_ends_on_a_failure(api: Api, desired: FakeCore) -> None:
    desired.on_nudge = lambda name, _: desired.set_status(name, "failed")
    reply = api.post(WAKE + "?wait=30")
    assert reply.status == 200
    assert reply.json()["settled"] is True and reply.json()["instance"]["status"] == "failed"


def test_a_failure_from_before_the_wake_is_not_its_outcome(api: Api, desired: FakeCore) -> None:
    desired.set_status("chat", "failed")
    reply = api.post(WAKE + "?wait=0")  # no wait: the status now, which is the old failure
    assert reply.status == 202
    assert reply.json()["settled"] is False and reply.json()["instance"]["status"] == "failed"
    assert desired.nudges == [("chat", "wake")]


def test_a_wait_that_runs_out_answers_202_with_the_status_then(api: Api, desired: FakeCore) -> None:
    reply = api.post(SLEEP + "?wait=0")
    assert reply.status == 202
    assert reply.json()["settled"] is False and reply.json()["instance"]["status"] == "starting"


@pytest.mark.parametrize("query", ["wait=61", "wait=-1", "wait=soon", "wait=nan", "after=3"])
def test_a_bad_query_is_422_and_nothing_is_done(api: Api, desired: FakeCore, query: str) -> None:
    reply = api.post(f"{WAKE}?{query}")
    assert reply.status == 422
    assert reply.json()["detail"]["field"] in ("wait", "query")
    assert desired.nudges == []


def test_without_the_token_nothing_is_done(api: Api, desired: FakeCore) -> None:
    assert api.post(WAKE, token=None).status == 401
    assert desired.nudges == []
