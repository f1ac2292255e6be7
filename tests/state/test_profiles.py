# SPDX-License-Identifier: AGPL-3.0-or-later
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ozwald.config import parse_settings
from ozwald.records import UpdateError
from ozwald.state import (
    ProfileQueue,
    ProfileRequest,
    ProfileRequestBody,
    ProfileResult,
    ProfileResults,
    QueueFull,
    StateCorrupt,
    result_json,
    validate_profile_request,
)
from ozwald.state.resp import Client
from tests.support.race import race
from tests.support.redis_server import RedisServer

SETTINGS = parse_settings("""\
services:
  - name: qwen1.5-vllm
    type: container
    varieties:
      nvidia: {image: openai-api-vllm.nvidia}
      cpu-only: {image: openai-api-vllm.cpu-only}
    profiles:
      no-gpu: {environment: {MAX_MODEL_LEN: "45000"}}
      fast-gpu: {environment: {GPU_MEMORY_UTILIZATION: "0.9"}}
  - name: fiction-sources
    type: source-files
    environment: {DIRECTORY: sources/}
""")


def test_enqueue_and_list(redis_client: Client, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", settings=SETTINGS, state_dir=state_dir)
    before = datetime.now(UTC)
    first = queue.enqueue({"service": "qwen1.5-vllm", "variety": "nvidia", "profile": "fast-gpu"})
    second = queue.enqueue(ProfileRequestBody(service="qwen1.5-vllm"))
    assert first != second and len(first) == 32
    listed = queue.list()
    assert [item["request_id"] for item in listed] == [first, second]  # oldest first
    # The predecessor's fields, plus the item, its position, state and progress.
    assert {k: listed[0][k] for k in ("service", "variety", "profile", "request_id", "requested_at")} == {
        "service": "qwen1.5-vllm", "variety": "nvidia", "profile": "fast-gpu", "request_id": first,
        "requested_at": listed[0]["requested_at"]}
    assert [(i["position"], i["state"]) for i in listed] == [(0, "queued"), (1, "queued")]
    assert listed[0]["progress"] == {"request_items": 1, "request_items_done": 0, "phase": "queued",
                                     "phase_since": None}
    assert datetime.fromisoformat(listed[0]["requested_at"]) >= before
    assert listed[1]["variety"] is None and listed[1]["profile"] is None
    requests = queue.requests()
    assert all(isinstance(r, ProfileRequest) for r in requests)
    assert requests[0].queued_at >= before and requests[0].queued_at.tzinfo is not None
    assert requests[0].id == requests[0].request_id == first
    assert queue.count() == 2


def test_remove_and_pop(redis_client: Client, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    ids = [queue.enqueue({"service": name}) for name in ("a", "b", "c")]
    assert queue.remove(ids[1]) is True
    assert queue.remove(ids[1]) is False
    popped = queue.pop()
    assert popped is not None and popped.id == ids[0]
    assert [r.id for r in queue.requests()] == [ids[2]]
    assert queue.pop() is not None and queue.pop() is None


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"service": "nope"}, "service", "unknown service 'nope'; configured: qwen1.5-vllm, fiction-sources"),
    ({"service": "qwen1.5-vllm", "variety": "amdgpu"}, "variety", "its varieties: nvidia, cpu-only"),
    ({"service": "qwen1.5-vllm", "profile": "turbo"}, "profile", "its profiles: no-gpu, fast-gpu"),
    ({"service": "fiction-sources"}, "service", "only container services can be profiled"),
    ({"service": "bad name!"}, "service", "invalid name"),
    ({"service": "qwen1.5-vllm", "colour": "red"}, "colour", "Extra inputs are not permitted"),
    ({}, "service", "Field required"),
    (["not", "an", "object"], "body", "a profiling request is a JSON object"),
])
def test_invalid_requests_are_update_errors(redis_client: Client, body: object, field: str,
                                            message: str, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", settings=SETTINGS, state_dir=state_dir)
    with pytest.raises(UpdateError) as caught:
        queue.enqueue(body)
    assert caught.value.field == field and caught.value.index is None
    assert message in caught.value.message
    assert queue.count() == 0


def test_validation_without_settings_checks_only_the_shape() -> None:
    assert validate_profile_request({"service": "anything"}).service == "anything"
    with pytest.raises(UpdateError):
        validate_profile_request({"service": ""})


def test_queue_is_bounded(redis_client: Client, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", max_pending=2, state_dir=state_dir)
    queue.enqueue({"service": "a"})
    queue.enqueue({"service": "b"})
    with pytest.raises(QueueFull, match="2 profiling requests are pending"):
        queue.enqueue({"service": "c"})
    assert queue.count() == 2


def test_a_damaged_queue_is_an_error_not_an_empty_queue(redis_client: Client, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    redis_client.set("ozwald:local:profile-queue", "{garbage")
    with pytest.raises(StateCorrupt, match="the profiling queue in Redis key ozwald:local:profile-queue is damaged"):
        queue.requests()


def test_one_request_many_items_and_preemption_puts_an_item_back_in_front(redis_client: Client,
                                                                         state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", settings=SETTINGS, state_dir=state_dir)
    other = queue.enqueue({"service": "qwen1.5-vllm"})
    rid = queue.enqueue_many([ProfileRequestBody(service="qwen1.5-vllm", variety="cpu-only", profile=p)
                              for p in ("no-gpu", "fast-gpu")])
    items = queue.requests()
    assert [i.request_id for i in items] == [other, rid, rid] and len({i.item_id for i in items}) == 3
    queue.finish(items[0].item_id)
    queue.mark(items[2].item_id, "starting", attempt=True)
    queue.requeue_front(items[2].item_id, "preempted by generation 4")
    listed = queue.list()
    assert [(e["item_id"], e["state"], e["position"], e["preempted"], e["attempts"]) for e in listed] == [
        (items[2].item_id, "queued", 0, 1, 1), (items[1].item_id, "queued", 1, 0, 0)]
    assert listed[0]["progress"]["phase"] == "preempted by generation 4"
    queue.mark(items[2].item_id, "holding")
    assert queue.list()[0]["state"] == "running"
    queue.finish(items[2].item_id)
    assert queue.list()[0]["progress"] == {"request_items": 2, "request_items_done": 1, "phase": "queued",
                                           "phase_since": None}


def measured(service: str, ram: float) -> ProfileResult:
    now = datetime.now(UTC)
    return ProfileResult(service=service, spec_hash="h1", outcome="measured", started_at=now, finished_at=now,
                         ram_peak_mib=ram)


def test_queue_and_results_survive_restarts_of_redis_and_of_the_provisioner(
        redis_client: Client, restart_redis: Callable[[], None], state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    results = ProfileResults(redis_client, "local", state_dir=state_dir)
    first = queue.enqueue({"service": "a"})
    second = queue.enqueue({"service": "b"})
    queue.mark(queue.requests()[0].item_id, "holding", attempt=True)
    results.record(measured("a", 300.0))
    restart_redis()
    assert redis_client.get("ozwald:local:profile-queue") is None  # Redis came back empty
    assert [r.request_id for r in queue.requests()] == [first, second]
    assert queue.document.sync_cache() and redis_client.get("ozwald:local:profile-queue") is not None
    # The provisioner restarts, with Redis wiped again: the files have everything.
    redis_client.execute("FLUSHALL")
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    results = ProfileResults(redis_client, "local", state_dir=state_dir)
    queue.reset_running()  # what a restarted provisioner does
    assert [r.state for r in queue.requests()] == ["queued", "queued"]
    third = queue.enqueue({"service": "c"})  # the revision continues from the file's
    assert [r.request_id for r in queue.requests()] == [first, second, third]
    assert queue.document.read().revision == 5
    assert [(r.service, r.ram_peak_mib) for r in results.all()] == [("a", 300.0)]


def test_racing_threads_lose_no_queued_item_and_no_result(redis_client: Client, state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    results = ProfileResults(redis_client, "local", state_dir=state_dir)
    writers, per_writer = 4, 25
    ids: list[str] = []

    def writer(worker: int) -> None:
        for i in range(per_writer):
            ids.append(queue.enqueue({"service": f"w{worker}-{i}"}))
            results.record(measured(f"w{worker}-{i}", float(i)))

    race(writer, writers)
    assert sorted(r.request_id for r in queue.requests()) == sorted(ids) and len(ids) == writers * per_writer
    assert len(results.all()) == writers * per_writer
    assert queue.document.read().revision == writers * per_writer
    reopened = ProfileQueue(redis_client, "local", state_dir=state_dir)
    assert reopened.requests() == queue.requests()


def test_with_redis_down_the_queue_and_results_go_on(redis_client: Client, redis_server: RedisServer,
                                                      state_dir: Path) -> None:
    queue = ProfileQueue(redis_client, "local", state_dir=state_dir)
    results = ProfileResults(redis_client, "local", state_dir=state_dir)
    redis_server.stop()
    try:
        rid = queue.enqueue({"service": "a"})
        results.record(measured("a", 1.0))
        assert [r.request_id for r in queue.requests()] == [rid] and [r.service for r in results.all()] == ["a"]
    finally:
        redis_server.start()
    assert results.document.sync_cache()
    assert ProfileResults(redis_client, "local", state_dir=state_dir / "elsewhere").all() == results.all()


def test_results_are_keyed_by_spec_hash(redis_client: Client, state_dir: Path) -> None:
    results = ProfileResults(redis_client, "local", state_dir=state_dir)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    old = ProfileResult(service="a", variety="cpu-only", spec_hash="h1", outcome="measured", started_at=t0,
                        finished_at=t0, ram_peak_mib=100.0)
    new = old.model_copy(update={"spec_hash": "h2", "finished_at": t1, "ram_peak_mib": 200.0})
    failed = new.model_copy(update={"outcome": "failed", "reason": "exited 3", "finished_at": t1, "spec_hash": "h3"})
    for result in (old, new, failed):
        results.record(result)
    assert [r.spec_hash for r in results.all()][2] == "h1"
    measured, newest = results.latest("a", "cpu-only", None)
    assert measured is not None and measured.spec_hash == "h2" and newest is not None and newest.outcome == "failed"
    results.record(new.model_copy(update={"ram_peak_mib": 250.0}))  # same key: replaced
    assert [r.ram_peak_mib for r in results.all() if r.spec_hash == "h2"] == [250.0]
    assert result_json(new, "h2")["stale"] is False and result_json(old, "h2")["stale"] is True
