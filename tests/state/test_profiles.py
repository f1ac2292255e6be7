# SPDX-License-Identifier: AGPL-3.0-or-later
from datetime import UTC, datetime

import pytest
import redis

from ozwald.config import parse_settings
from ozwald.records import UpdateError
from ozwald.state import ProfileQueue, ProfileRequest, ProfileRequestBody, QueueFull, validate_profile_request

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


def test_enqueue_and_list(redis_client: redis.Redis) -> None:
    queue = ProfileQueue(redis_client, "local", settings=SETTINGS)
    before = datetime.now(UTC)
    first = queue.enqueue({"service": "qwen1.5-vllm", "variety": "nvidia", "profile": "fast-gpu"})
    second = queue.enqueue(ProfileRequestBody(service="qwen1.5-vllm"))
    assert first != second and len(first) == 32
    listed = queue.list()
    assert [item["request_id"] for item in listed] == [first, second]  # oldest first
    assert listed[0] == {"service": "qwen1.5-vllm", "variety": "nvidia", "profile": "fast-gpu", "request_id": first,
                         "requested_at": listed[0]["requested_at"]}
    assert datetime.fromisoformat(listed[0]["requested_at"]) >= before
    assert listed[1]["variety"] is None and listed[1]["profile"] is None
    requests = queue.requests()
    assert all(isinstance(r, ProfileRequest) for r in requests)
    assert requests[0].queued_at >= before and requests[0].queued_at.tzinfo is not None
    assert requests[0].id == requests[0].request_id == first
    assert queue.count() == 2


def test_remove_and_pop(redis_client: redis.Redis) -> None:
    queue = ProfileQueue(redis_client, "local")
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
def test_invalid_requests_are_update_errors(redis_client: redis.Redis, body: object, field: str,
                                            message: str) -> None:
    queue = ProfileQueue(redis_client, "local", settings=SETTINGS)
    with pytest.raises(UpdateError) as caught:
        queue.enqueue(body)
    assert caught.value.field == field and caught.value.index is None
    assert message in caught.value.message
    assert queue.count() == 0


def test_validation_without_settings_checks_only_the_shape() -> None:
    assert validate_profile_request({"service": "anything"}).service == "anything"
    with pytest.raises(UpdateError):
        validate_profile_request({"service": ""})


def test_queue_is_bounded(redis_client: redis.Redis) -> None:
    queue = ProfileQueue(redis_client, "local", max_pending=2)
    queue.enqueue({"service": "a"})
    queue.enqueue({"service": "b"})
    with pytest.raises(QueueFull, match="2 profiling requests"):
        queue.enqueue({"service": "c"})
    assert queue.count() == 2


def test_damaged_entries_are_skipped(redis_client: redis.Redis) -> None:
    queue = ProfileQueue(redis_client, "local")
    redis_client.rpush("ozwald:local:profiles", "{garbage")
    good = queue.enqueue({"service": "a"})
    assert [item["request_id"] for item in queue.list()] == [good]
    popped = queue.pop()
    assert popped is not None and popped.id == good
