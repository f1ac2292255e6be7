# SPDX-License-Identifier: AGPL-3.0-or-later
"""Blocking queries on GET /srv/services/active/: `after` + `wait` instead of polling, over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from ozwald.api import create_server
from tests.api.conftest import API_KEY, Api, FakeCore, Reply

ACTIVE = "/srv/services/active/"
UPDATE = "/srv/services/active/update/"
QWEN = {"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}


def revision(reply: Reply) -> int:
    value = reply.header("X-Ozwald-Revision")
    assert value is not None and value.isdigit(), reply.headers
    return int(value)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def wait_until_blocked(core: FakeCore, waiters: int = 1) -> None:
    """Until exactly `waiters` requests sit in the core's wait (the condition's waiter list says so)."""
    pause = threading.Event()
    for _ in range(1000):
        with core.changed:
            if len(core.changed._waiters) == waiters:  # type: ignore[attr-defined]
                return
        pause.wait(0.01)
    raise AssertionError(f"never {waiters} request(s) in the wait")


def test_every_answer_carries_a_revision_that_grows_with_changes(api: Api) -> None:
    first = revision(api.get(ACTIVE))
    assert revision(api.get(ACTIVE.rstrip("/"))) == first
    assert api.post(UPDATE, [QWEN]).status == 202
    assert revision(api.get(ACTIVE)) > first


def test_a_waiting_request_is_answered_by_the_change(api: Api, core: FakeCore, pool: ThreadPoolExecutor) -> None:
    current = revision(api.get(ACTIVE))
    waiting: Future[Reply] = pool.submit(api.get, f"{ACTIVE}?after={current}&wait=8")
    wait_until_blocked(core)
    assert not waiting.done()
    assert api.post(UPDATE, [QWEN]).status == 202
    reply = waiting.result(timeout=8)
    assert reply.status == 200
    assert revision(reply) > current
    assert [s["name"] for s in reply.json()] == ["qwen1.5-vllm"]


def test_without_a_change_the_wait_ends_with_the_same_revision(api: Api) -> None:
    current = revision(api.get(ACTIVE))
    reply = api.get(f"{ACTIVE}?after={current}&wait=0.3")
    assert (reply.status, revision(reply), reply.json()) == (200, current, [])


def test_a_stale_revision_is_answered_at_once(api: Api) -> None:
    current = revision(api.get(ACTIVE))
    api.post(UPDATE, [QWEN])
    reply = api.get(f"{ACTIVE}?after={current}&wait=60")  # a wait would outlast the client's 10 s timeout
    assert revision(reply) == current + 1
    assert revision(api.get(f"{ACTIVE}?after=0&wait=60")) == current + 1  # e.g. from before a restart


@pytest.mark.parametrize(("query", "field"), [
    ("after=abc", "after"), ("after=-1", "after"), ("after=1.5", "after"), ("after=99999999999999999999", "after"),
    ("after=1&wait=-1", "wait"), ("after=1&wait=61", "wait"), ("after=1&wait=nan", "wait"),
    ("after=1&wait=inf", "wait"), ("after=1&wait=soon", "wait"), ("afterr=1", "query"),
])
def test_malformed_parameters_are_refused_naming_the_field(api: Api, query: str, field: str) -> None:
    reply = api.get(f"{ACTIVE}?{query}")
    assert reply.status == 422
    assert reply.json()["detail"]["field"] == field


def test_waiters_beyond_the_limit_get_429_and_other_requests_still_answer(pool: ThreadPoolExecutor) -> None:
    core = FakeCore()
    with create_server(core, API_KEY, host="127.0.0.1", port=0, threads=3) as small:  # one waiter allowed
        small.start()
        api = Api(small)
        current = revision(api.get(ACTIVE))
        waiting = pool.submit(api.get, f"{ACTIVE}?after={current}&wait=8")
        wait_until_blocked(core)
        refused = api.get(f"{ACTIVE}?after={current}&wait=8")
        assert refused.status == 429
        assert refused.header("Retry-After") == "1"
        assert "waiting" in refused.json()["detail"]
        assert api.get("/health", token=None).status == 200
        assert api.post(UPDATE, [QWEN]).status == 202  # wakes the waiter
        assert waiting.result(timeout=8).status == 200
        assert api.get(f"{ACTIVE}?after={current}&wait=8").status == 200  # the slot is free again


def test_closing_the_server_releases_waiting_requests(pool: ThreadPoolExecutor) -> None:
    core = FakeCore()
    small = create_server(core, API_KEY, host="127.0.0.1", port=0, threads=4)
    small.start()
    api = Api(small)
    current = revision(api.get(ACTIVE))
    waiting = pool.submit(api.get, f"{ACTIVE}?after={current}&wait=60")
    wait_until_blocked(core)
    pool.submit(small.close)
    wait_until_blocked(core, waiters=0)  # the request left its 60 s wait: the server is not held by it
    try:
        reply = waiting.result(timeout=30)
    except OSError:
        return  # the connection closed with the server before the answer went out
    assert reply.status == 200 and revision(reply) == current  # answered with what it had
