# SPDX-License-Identifier: AGPL-3.0-or-later
"""Every endpoint's shape, the slash twins, body validation and the error mapping, over real HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from ozwald.api import AdmissionError, CoreUnavailable
from ozwald.records import UpdateError
from ozwald.state import QueueFull, StateUnavailable
from tests.api.conftest import ENDPOINTS, Api, FakeCore, concrete, twin

UPDATE = "/srv/services/active/update/"
PLAN = "/srv/services/active/plan/"
QWEN = {"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}


# -- shapes ------------------------------------------------------------------------------------------


def test_health_is_public_and_healthy(api: Api) -> None:
    reply = api.get("/health", token=None)
    assert reply.status == 200
    assert reply.json() == {"status": "healthy"}
    assert reply.header("Content-Type") == "application/json"


def test_health_names_failing_components(api: Api, core: FakeCore) -> None:
    core.components["cache"] = "redis unreachable"
    reply = api.get("/health", token=None)
    assert reply.status == 503
    assert reply.json() == {"status": "unhealthy", "components": {"cache": "redis unreachable", "systemd": "ok"}}


def test_health_check_that_raises_is_unhealthy(api: Api, core: FakeCore, caplog: pytest.LogCaptureFixture) -> None:
    core.raise_on["health"] = RuntimeError("boom")
    reply = api.get("/health", token=None)
    assert reply.status == 503
    assert reply.json()["status"] == "unhealthy"
    assert "boom" not in reply.body.decode()


def test_configured_services(api: Api) -> None:
    reply = api.get("/srv/services/configured/")
    assert reply.status == 200
    names = [service["name"] for service in reply.json()]
    assert names == ["qwen1.5-vllm", "fiction-sources"]
    assert reply.json()[0]["varieties"]["cpu-only"]["image"] == "openai-api-vllm.cpu-only"


def test_update_then_active(api: Api, core: FakeCore) -> None:
    reply = api.post(UPDATE, [QWEN])
    assert reply.status == 202
    body = reply.json()
    assert body["status"] == "accepted"
    assert body["generation"] == 1
    assert isinstance(body["message"], str) and body["message"]
    assert core.update_calls[0][1] is False
    [item] = core.update_calls[0][0]
    assert (item.name, item.service, item.variety, item.profile) == (
        "qwen1.5-vllm", "qwen1.5-vllm", "cpu-only", "no-gpu")

    active = api.get("/srv/services/active/").json()
    assert active == [{"name": "qwen1.5-vllm", "service": "qwen1.5-vllm", "variety": "cpu-only",
                       "profile": "no-gpu", "status": "starting", "properties": {},
                       "info": {"unit": "ozwald-qwen1.5-vllm.service"}}]
    assert api.post(UPDATE, []).json()["generation"] == 2
    assert api.get("/srv/services/active/").json() == []


def test_update_accepts_echoed_service_information(api: Api, core: FakeCore) -> None:
    echoed = {**QWEN, "service": "qwen1.5-vllm", "status": "available", "properties": {}, "info": {"x": 1}}
    assert api.post(UPDATE, [echoed]).status == 202


@pytest.mark.parametrize(("query", "expected"), [("?force=true", True), ("?force=1", True), ("?force=false", False),
                                                 ("?force=False", False), ("", False)])
def test_update_force(api: Api, core: FakeCore, query: str, expected: bool) -> None:
    assert api.post(UPDATE + query, [QWEN]).status == 202
    assert core.update_calls[-1][1] is expected


def test_update_rejects_a_malformed_force(api: Api, core: FakeCore) -> None:
    reply = api.post(UPDATE + "?force=maybe", [QWEN])
    assert reply.status == 422
    assert reply.json()["detail"]["field"] == "force"
    assert core.update_calls == []


def test_update_rejects_an_unknown_query_parameter(api: Api, core: FakeCore) -> None:
    reply = api.post(UPDATE + "?forse=true", [QWEN])
    assert reply.status == 422
    assert reply.json()["detail"] == {"index": None, "field": "query", "message": "unknown query parameter forse"}
    assert core.update_calls == []


def test_plan_applies_nothing(api: Api, core: FakeCore) -> None:
    api.post(UPDATE, [{"name": "old", "service": "fiction-sources"}])
    reply = api.post(PLAN, [QWEN])
    assert reply.status == 200
    assert reply.json() == [
        {"name": "qwen1.5-vllm", "action": "start", "reason": "requested", "service": "qwen1.5-vllm",
         "variety": "cpu-only", "profile": "no-gpu", "fit": None},
        {"name": "old", "action": "stop", "reason": "not in the desired set", "service": "fiction-sources",
         "variety": None, "profile": None, "fit": None},
    ]
    assert len(core.update_calls) == 1
    assert [i.name for i in core.desired.instances] == ["old"]


def test_host_resources(api: Api) -> None:
    body = api.get("/srv/host/resources").json()
    for key in ("total_cpu_cores", "available_cpu_cores", "total_ram_gb", "available_ram_gb", "total_vram_gb",
                "available_vram_gb", "total_gpus", "available_gpus", "gpus"):
        assert key in body
    assert set(body["gpus"][0]) >= {"id", "total_vram", "available_vram", "description", "pci_device_description"}


def test_available_resources(api: Api) -> None:
    body = api.get("/srv/resources/available/").json()
    assert {r["type"] for r in body} == {"cpu", "memory", "gpu", "vram"}
    for resource in body:
        assert set(resource) == {"name", "type", "unit", "value", "related_resources", "extended_attributes"}


def test_profile_queue(api: Api, core: FakeCore) -> None:
    assert api.get("/srv/services/profile").json() == []
    reply = api.post("/srv/services/profile", {"service": "qwen1.5-vllm", "variety": "cpu-only"})
    assert reply.status == 202
    assert reply.json() == {"status": "accepted", "request_id": "req-1"}
    assert api.get("/srv/services/profile").json() == [
        {"service": "qwen1.5-vllm", "variety": "cpu-only", "request_id": "req-1"}]


def test_profile_bad_body(api: Api) -> None:
    assert api.post("/srv/services/profile", raw=b"{nope").status == 422
    reply = api.post("/srv/services/profile", ["not", "an", "object"])
    assert reply.status == 400
    assert reply.json() == {
        "detail": {"index": None, "field": "body", "message": "a profiling request is a JSON object"}}


def test_profile_not_admitted(api: Api, core: FakeCore) -> None:
    api.post(UPDATE, [QWEN])
    reply = api.post("/srv/services/profile", {"service": "busy"})
    assert reply.status == 409
    assert reply.json() == {"detail": "profiling requires an unloaded system"}


# -- slash twins -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_slash_twins_answer_the_same_without_redirect(api: Api, method: str, path: str, body: object) -> None:
    path = concrete(api, path)
    first = api.request(method, path, body)
    second = api.request(method, twin(path), body)
    assert first.status in (200, 202)
    assert second.status == first.status
    assert "location" not in first.headers and "location" not in second.headers
    if path == "/metrics":  # the second scrape counts the first request, and the process's CPU has moved on
        assert first.body.startswith(b"# HELP ") and second.body.startswith(b"# HELP ")
        text = "text/plain; version=0.0.4; charset=utf-8"
        assert first.header("Content-Type") == second.header("Content-Type") == text
        return
    if method == "GET":
        assert first.body == second.body
    elif path.endswith("/update/"):  # the generation moves on with each accepted update
        assert first.json()["generation"] + 1 == second.json()["generation"]
    elif path.endswith("/profile"):  # a new request id for each queued request
        assert first.json().keys() == second.json().keys()
    else:
        assert first.body == second.body
    assert first.header("Content-Type") == second.header("Content-Type") == "application/json"


# -- body validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [UPDATE, PLAN])
@pytest.mark.parametrize(("raw", "field"), [
    (b"", "body"),
    (b"   ", "body"),
    (b"[{", "body"),
    (b"\xff\xfe[]", "body"),
    (b'{"name": "x"}', "body"),
    (b'"qwen"', "body"),
    (b"null", "body"),
    (b'["qwen1.5-vllm"]', ""),
    (b'[{"name": "a"}, 3]', ""),
    (b"[" * 100_000 + b"]" * 100_000, "body"),
])
def test_malformed_bodies_are_422(api: Api, core: FakeCore, path: str, raw: bytes, field: str) -> None:
    reply = api.post(path, raw=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 422
    detail = reply.json()["detail"]
    assert detail["field"] == field
    assert isinstance(detail["message"], str)
    assert core.update_calls == [] and core.plan_calls == []


@pytest.mark.parametrize("path", [UPDATE, PLAN])
@pytest.mark.parametrize(("items", "index", "field"), [
    ([{"variety": "cpu-only"}], 0, "name"),
    ([QWEN, {"name": "bad name!"}], 1, "name"),
    ([QWEN, {"name": "x", "variety": "no/slash"}], 1, "variety"),
    ([{"name": "x", "servcie": "qwen1.5-vllm"}], 0, "servcie"),
    ([{"name": 42}], 0, "name"),
    ([{"name": "x" * 64}], 0, "name"),
])
def test_invalid_items_are_400_naming_index_and_field(api: Api, core: FakeCore, path: str, items: list[object],
                                                     index: int, field: str) -> None:
    reply = api.post(path, items)
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert (detail["index"], detail["field"]) == (index, field)
    assert detail["message"]
    assert detail["errors"][0] == {"index": index, "field": field, "message": detail["message"]}
    assert core.update_calls == [] and core.plan_calls == []


def test_every_invalid_item_is_reported(api: Api) -> None:
    reply = api.post(UPDATE, [{"name": "ok"}, {"name": "bad!"}, {"variety": "x"}])
    errors = reply.json()["detail"]["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "name"), (2, "name")]


@pytest.mark.parametrize("path", [UPDATE, PLAN])
def test_duplicate_instance_names_are_400(api: Api, core: FakeCore, path: str) -> None:
    reply = api.post(path, [QWEN, {"name": "other", "service": "fiction-sources"}, QWEN])
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert (detail["index"], detail["field"]) == (2, "name")
    assert "duplicate" in detail["message"]
    assert core.update_calls == [] and core.plan_calls == []


@pytest.mark.parametrize("path", [UPDATE, PLAN])
def test_core_update_error_is_400_all_or_nothing(api: Api, core: FakeCore, path: str) -> None:
    api.post(UPDATE, [QWEN])
    before = core.desired
    reply = api.post(path, [QWEN, {"name": "x", "service": "qwen1.5-vllm", "variety": "tpu"}])
    assert reply.status == 400
    assert reply.json() == {"detail": {"index": 1, "field": "variety", "message": "unknown variety 'tpu'"}}
    assert core.desired == before


def test_admission_error_is_409(api: Api, core: FakeCore) -> None:
    core.raise_on["update"] = AdmissionError({"resource": "vram:nvidia:0", "message": "needs 20000 MiB, 4000 free"})
    reply = api.post(UPDATE, [QWEN])
    assert reply.status == 409
    assert reply.json() == {"detail": {"resource": "vram:nvidia:0", "message": "needs 20000 MiB, 4000 free"}}


def test_core_update_error_from_update(api: Api, core: FakeCore) -> None:
    core.raise_on["update"] = UpdateError(0, "profile", "unknown profile")
    assert api.post(UPDATE, [QWEN]).json() == {"detail": {"index": 0, "field": "profile",
                                                          "message": "unknown profile"}}


@pytest.mark.parametrize("method", ["configured_services", "active_services", "host_resources",
                                    "available_resources", "profile_requests"])
def test_unavailable_core_is_503(api: Api, core: FakeCore, method: str) -> None:
    core.raise_on[method] = CoreUnavailable("the cache is unreachable")
    path = {"configured_services": "/srv/services/configured/", "active_services": "/srv/services/active/",
            "host_resources": "/srv/host/resources", "available_resources": "/srv/resources/available/",
            "profile_requests": "/srv/services/profile"}[method]
    reply = api.get(path)
    assert reply.status == 503
    assert reply.json() == {"detail": "the cache is unreachable"}


def test_a_full_profiling_queue_is_429_with_retry_after(api: Api, core: FakeCore) -> None:
    core.raise_on["enqueue_profile"] = QueueFull("8 profiling requests are pending (at most 8)")
    reply = api.post("/srv/services/profile", {"service": "qwen1.5-vllm"})
    assert reply.status == 429
    assert reply.json() == {"detail": "8 profiling requests are pending (at most 8)"}
    assert int(reply.header("Retry-After") or 0) > 0


def test_an_unreachable_redis_escaping_the_core_is_503_naming_no_password(api: Api, core: FakeCore) -> None:
    core.raise_on["profile_requests"] = StateUnavailable("Redis at unix:/run/ozwald-redis/redis.sock: refused",
                                                         "unix:/run/ozwald-redis/redis.sock")
    reply = api.get("/srv/services/profile")
    assert reply.status == 503
    assert reply.json() == {"detail": "Redis at unix:/run/ozwald-redis/redis.sock: refused"}


# -- body size ---------------------------------------------------------------------------------------

ONE_MIB = 1024 * 1024


def _padded(size: int) -> bytes:
    body = b'[{"name": "qwen1.5-vllm", "variety": "cpu-only"}]'
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("path", [UPDATE, PLAN, "/srv/services/profile"])
def test_body_of_exactly_one_mib_is_read(api: Api, path: str) -> None:
    raw = _padded(ONE_MIB) if path != "/srv/services/profile" else b'{"service": "qwen1.5-vllm"}'.ljust(ONE_MIB)
    reply = api.post(path, raw=raw)
    assert reply.status in (200, 202)


@pytest.mark.parametrize("path", [UPDATE, PLAN, "/srv/services/profile"])
def test_body_over_one_mib_is_413(api: Api, core: FakeCore, path: str) -> None:
    reply = api.post(path, raw=_padded(ONE_MIB + 1))
    assert reply.status == 413
    assert reply.json() == {"detail": f"request body too large: at most {ONE_MIB} bytes"}
    assert core.update_calls == [] and core.plan_calls == [] and core.profiles == []


def test_chunked_body_over_one_mib_is_413(api: Api, core: FakeCore) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b" " * 65536

    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        conn.request("POST", UPDATE, body=chunks(), encode_chunked=True,
                     headers={"Authorization": f"Bearer {api.key}", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/json"
        assert "detail" in json.loads(response.read())
    finally:
        conn.close()
    assert core.update_calls == []


@pytest.mark.parametrize("size_mib", [3, 40])
def test_client_that_sends_the_whole_body_first_reads_the_413(api: Api, core: FakeCore, size_mib: int) -> None:
    """urllib writes the whole body before it reads a byte: the answer must still reach it, not a reset."""
    items = [{"name": f"n{i}", "variety": "cpu-only"} for i in range(size_mib * 1024 * 1024 // 36)]
    data = json.dumps(items).encode()
    assert len(data) > size_mib * 1024 * 1024 * 0.9
    request = urllib.request.Request(f"http://{api.host}:{api.port}{UPDATE}", data=data, method="POST",
                                     headers={"Authorization": f"Bearer {api.key}",
                                              "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read()) == {"detail": f"request body too large: at most {ONE_MIB} bytes"}
    assert core.update_calls == []


def test_huge_declared_length_is_refused_before_reading(api: Api) -> None:
    """Waitress refuses it from the headers alone; the answer is still JSON."""
    answer = api.raw(b"POST " + UPDATE.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api.key.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n[")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"content-type: application/json" in head.lower()
    assert b'"detail"' in body
    assert b"waitress" not in body


# -- errors are JSON, never HTML ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404),
    ("GET", "/srv/services/", 404),
    ("GET", "/srv/services/active//", 404),
    ("DELETE", "/srv/services/active/", 405),
    ("POST", "/health", 405),
    ("PUT", "/srv/services/active/update/", 405),
    ("GET", "/srv/services/active/update/", 405),
])
def test_routing_errors_are_json(api: Api, method: str, path: str, status: int) -> None:
    reply = api.request(method, path)
    assert reply.status == status
    assert reply.header("Content-Type") == "application/json"
    assert isinstance(reply.json()["detail"], str)
    assert b"<" not in reply.body


def test_405_lists_allowed_methods(api: Api) -> None:
    reply = api.request("DELETE", "/srv/services/profile")
    assert reply.status == 405
    assert set((reply.header("Allow") or "").split(",")) >= {"GET", "POST"}


def test_unexpected_exception_is_500_logged_not_leaked(api: Api, core: FakeCore,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    core.raise_on["active_services"] = RuntimeError("secret internals at /var/lib/thing")
    with caplog.at_level(logging.ERROR, logger="ozwald.api"):
        reply = api.get("/srv/services/active/")
    assert reply.status == 500
    assert reply.json() == {"detail": "internal error"}
    assert reply.header("Content-Type") == "application/json"
    assert b"Traceback" not in reply.body and b"secret internals" not in reply.body
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])
    assert "Traceback" in caplog.text


def test_malformed_request_line_is_json(api: Api) -> None:
    answer = api.raw(b"GARBAGE\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    assert b" 400 " in head.split(b"\r\n")[0]
    assert b"content-type: application/json" in head.lower()
    assert body.startswith(b'{"detail":')


def test_head_of_a_get_endpoint(api: Api) -> None:
    reply = api.request("HEAD", "/srv/services/configured/")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Content-Type") == "application/json"
