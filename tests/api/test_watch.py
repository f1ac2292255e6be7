# SPDX-License-Identifier: AGPL-3.0-or-later
"""Blocking queries on GET /srv/services/active/: `after` + `wait` instead of polling, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from ozwald.api import app as app_module
from ozwald.api import create_server
from ozwald.records import ActiveService, ServiceRequest
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


class _CountingAdapter:
    """Stands in for the API's TypeAdapter of the statuses and counts its serializations."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.dumped = 0

    def dump_json(self, services: Any) -> bytes:
        self.dumped += 1
        return bytes(self.real.dump_json(services))


class _SameListCore(FakeCore):
    """A core like the provisioner's: the same list object until the statuses change."""

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[int, list[ActiveService]] | None = None

    def watch_active(self, after: int | None, wait: float) -> tuple[int, list[ActiveService]]:
        revision, services = super().watch_active(after, wait)
        if self._last is None or self._last[0] != revision:
            self._last = (revision, services)
        return self._last


def test_statuses_are_serialized_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _CountingAdapter(app_module._ACTIVE_LIST)
    monkeypatch.setattr(app_module, "_ACTIVE_LIST", counting)
    core = _SameListCore()
    with create_server(core, API_KEY, host="127.0.0.1", port=0, threads=4) as server:
        server.start()
        api = Api(server)
        first = [api.get(ACTIVE) for _ in range(5)]
        assert counting.dumped == 1
        assert {r.body for r in first} == {first[0].body}
        assert api.post(UPDATE, [QWEN]).status == 202
        second = [api.get(ACTIVE) for _ in range(3)]
        assert counting.dumped == 2  # a new revision is serialized once more
        assert [s["name"] for s in second[0].json()] == ["qwen1.5-vllm"]
        assert revision(second[0]) > revision(first[0])
        assert {r.body for r in second} == {second[0].body}


class _CountingWaitersCore(_SameListCore):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    def watch_active(self, after: int | None, wait: float) -> tuple[int, list[ActiveService]]:
        if after is not None and after == self.revision and wait > 0:
            with self.lock:
                self.waiting += 1
        return super().watch_active(after, wait)


class _SlowCountingAdapter(_CountingAdapter):
    def dump_json(self, services: Any) -> bytes:
        time.sleep(0.05)  # wide enough that every woken waiter arrives while the first one serializes
        return super().dump_json(services)


def test_waiters_woken_by_one_change_serialize_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four blocking queries woken together: one serializes, the others take its bytes (each serializing
    for itself made the last answer wait for four serializations competing for the interpreter)."""
    counting = _SlowCountingAdapter(app_module._ACTIVE_LIST)
    monkeypatch.setattr(app_module, "_ACTIVE_LIST", counting)
    core = _CountingWaitersCore()
    with create_server(core, API_KEY, host="127.0.0.1", port=0, threads=8) as server:
        server.start()
        current = revision(Api(server).get(ACTIVE))
        before = counting.dumped
        with ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(Api(server).get, f"{ACTIVE}?after={current}&wait=30") for _ in range(4)]
            deadline = time.monotonic() + 10
            while core.waiting < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert core.waiting == 4
            assert Api(server).post(UPDATE, [QWEN]).status == 202
            answers = [f.result(timeout=30) for f in waiting]
        assert {revision(a) for a in answers} == {current + 1}
        assert counting.dumped - before == 1


def test_a_fresh_list_is_never_served_from_the_cache(api: Api, core: FakeCore) -> None:
    """FakeCore builds a new list on each call: its answers follow it even without a revision change."""
    assert api.get(ACTIVE).json() == []
    with core.lock:
        core.desired = core.desired.model_copy(update={"instances": core._resolve([ServiceRequest(**QWEN)])})
    assert [s["name"] for s in api.get(ACTIVE).json()] == ["qwen1.5-vllm"]
