# SPDX-License-Identifier: AGPL-3.0-or-later
"""ozwald.client.OzwaldClient against the live test server."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import ozwald.client
from ozwald.api import AdmissionError, ApiServer
from ozwald.client import OzwaldAPIError, OzwaldClient, OzwaldConnectionError, OzwaldTimeout
from ozwald.records import ActiveService, PlanEntry, ServiceInfo, ServiceRequest
from tests.api.conftest import API_KEY, ON_DEMAND, FakeCore

QWEN = {"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}


@pytest.fixture
def client(server: ApiServer, core: FakeCore) -> OzwaldClient:
    return OzwaldClient(server.url + "/", API_KEY, timeout=5)


def test_health(client: OzwaldClient, core: FakeCore) -> None:
    assert client.health() == {"status": "healthy"}
    core.components["cache"] = "down"
    assert client.health() == {"status": "unhealthy", "components": {"cache": "down", "systemd": "ok"}}


def test_configured_services(client: OzwaldClient) -> None:
    assert [s["name"] for s in client.configured_services()] == ["qwen1.5-vllm", "fiction-sources"]


def test_update_plan_and_active(client: OzwaldClient, core: FakeCore) -> None:
    accepted = client.update([QWEN])
    assert accepted["status"] == "accepted" and accepted["generation"] == 1
    active = client.active_services()
    assert active == [ActiveService(name="qwen1.5-vllm", service="qwen1.5-vllm", variety="cpu-only", profile="no-gpu",
                                    status="starting", info=ServiceInfo(unit="ozwald-qwen1.5-vllm.service"))]
    plan = client.plan([ServiceRequest(name="fiction", service="fiction-sources")])
    assert all(isinstance(entry, PlanEntry) for entry in plan)
    assert {(entry.name, entry.action) for entry in plan} == {("fiction", "start"), ("qwen1.5-vllm", "stop")}
    assert client.update([ServiceRequest(name="qwen1.5-vllm", variety="cpu-only")], force=True)["generation"] == 2
    assert core.update_calls[-1][1] is True
    sent = core.update_calls[-1][0][0]
    assert (sent.name, sent.service, sent.variety, sent.profile) == ("qwen1.5-vllm", "qwen1.5-vllm", "cpu-only", None)


def test_watch_active_returns_at_the_change(client: OzwaldClient, core: FakeCore) -> None:
    revision, services = client.watch_active()
    assert services == []
    timer = threading.Timer(0.2, core.update, args=([ServiceRequest.model_validate(QWEN)],))
    timer.start()
    newer, services = client.watch_active(revision, wait=8)
    timer.join()
    assert newer == revision + 1
    assert [s.name for s in services] == ["qwen1.5-vllm"]
    assert client.watch_active(newer, wait=0.2) == (newer, services)  # no change: same revision, same list


def test_wait_for_follows_changes_until_the_condition_holds(client: OzwaldClient, core: FakeCore) -> None:
    def post(names: list[str]) -> None:
        core.update([ServiceRequest(name=n, service="qwen1.5-vllm") for n in names])

    timers = [threading.Timer(0.1, post, args=(["a"],)), threading.Timer(0.3, post, args=(["a", "b"],))]
    for timer in timers:
        timer.start()
    services = client.wait_for(lambda ss: {s.name for s in ss} == {"a", "b"}, timeout=8)
    assert sorted(s.name for s in services) == ["a", "b"]
    with pytest.raises(TimeoutError):
        client.wait_for(lambda ss: False, timeout=0.3)


def test_watch_active_retries_when_too_many_wait(server: ApiServer, core: FakeCore) -> None:
    client = OzwaldClient(server.url, API_KEY, timeout=5)
    revision, _ = client.watch_active()
    blockers = [threading.Thread(target=client.watch_active, args=(revision, 3)) for _ in range(6)]
    for thread in blockers:  # the shared server has 8 threads: 6 may wait
        thread.start()
    for _ in range(500):
        with core.changed:
            if len(core.changed._waiters) == 6:  # type: ignore[attr-defined]
                break
        threading.Event().wait(0.01)
    threading.Timer(0.3, core.update, args=([ServiceRequest.model_validate(QWEN)],)).start()
    newer, services = client.watch_active(revision, wait=8)  # answered 429 first, then waits and wins
    assert newer == revision + 1 and [s.name for s in services] == ["qwen1.5-vllm"]
    for thread in blockers:
        thread.join()


def test_resources(client: OzwaldClient) -> None:
    host = client.host_resources()
    assert host["total_gpus"] == 1 and host["gpus"][0]["id"] == "nvidia:0"
    assert {r["type"] for r in client.available_resources()} == {"cpu", "memory", "gpu", "vram"}


def test_profiles(client: OzwaldClient) -> None:
    assert client.profile_requests() == []
    assert client.enqueue_profile({"service": "qwen1.5-vllm"}) == {"status": "accepted", "request_id": "req-1"}
    assert client.profile_requests() == [{"service": "qwen1.5-vllm", "request_id": "req-1"}]
    [result] = client.profile_results()
    assert (result["service"], result["outcome"], result["ram_peak_mib"], result["stale"]) == (
        "qwen1.5-vllm", "measured", 312.5, False)


def test_errors_carry_status_and_detail(client: OzwaldClient, core: FakeCore) -> None:
    with pytest.raises(OzwaldAPIError) as info:
        client.update([QWEN, {"name": "x", "service": "nope"}])
    assert info.value.status == 400
    assert info.value.detail == {"index": 1, "field": "service", "message": "unknown service 'nope'"}

    with pytest.raises(OzwaldAPIError) as info:
        client.plan([{"name": "bad name"}])
    assert info.value.status == 400 and info.value.detail["field"] == "name"

    core.raise_on["update"] = AdmissionError("not enough VRAM")
    with pytest.raises(OzwaldAPIError) as info:
        client.update([QWEN])
    assert (info.value.status, info.value.detail) == (409, "not enough VRAM")


def test_wrong_key_is_401_and_never_shown(server: ApiServer, core: FakeCore) -> None:
    secret = "wrong-but-secret-0123456789"
    client = OzwaldClient(server.url, secret)
    with pytest.raises(OzwaldAPIError) as info:
        client.active_services()
    assert info.value.status == 401
    assert secret not in str(info.value) and secret not in repr(client)
    assert API_KEY not in repr(OzwaldClient(server.url, API_KEY))


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OzwaldClient(f"http://127.0.0.1:{port}", API_KEY, timeout=2)
    with pytest.raises(OzwaldConnectionError) as info:
        client.health()
    assert API_KEY not in str(info.value)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        OzwaldClient("file:///etc/passwd", API_KEY)
    with pytest.raises(ValueError):
        OzwaldClient("http://127.0.0.1:8000", "")


@pytest.fixture
def redirecting_server() -> Iterator[tuple[str, list[str]]]:
    """A server that redirects every request elsewhere, and records which Authorization headers reach it."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{port}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", seen
    httpd.shutdown()
    httpd.server_close()


def test_redirects_are_not_followed(redirecting_server: tuple[str, list[str]]) -> None:
    url, seen = redirecting_server
    with pytest.raises(OzwaldAPIError) as info:
        OzwaldClient(url, API_KEY).configured_services()
    assert info.value.status == 307
    assert len(seen) == 1


@pytest.fixture
def always_busy_server() -> Iterator[tuple[str, list[str]]]:
    """A server whose every answer is 429 with `Retry-After: 5`, recording the paths asked."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"detail":"4 requests are already waiting for a change"}'
            self.send_response(429)
            self.send_header("Retry-After", "5")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", asked
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(30)
def test_the_retry_on_429_honours_the_deadline(always_busy_server: tuple[str, list[str]]) -> None:
    """Retry-After is 5 s, the deadline 1 s away: the wait gives up at once instead of sleeping past it (it
    retried forever before)."""
    url, asked = always_busy_server
    client = OzwaldClient(url, API_KEY)
    with pytest.raises(OzwaldTimeout):
        client.wait_for(lambda services: False, timeout=1)
    with pytest.raises(OzwaldTimeout):
        client.watch_profile(7, wait=1, deadline=time.monotonic() + 1)
    assert asked == ["/srv/services/active/", "/srv/services/profile?after=7&wait=1"]
    with pytest.raises(TimeoutError):  # still a TimeoutError for callers that catch that
        client.wait_for(lambda services: False, timeout=1)


# -- wake and sleep ------------------------------------------------------------------------------------------


def test_wake_and_sleep_reach_the_core_and_say_why_not(client: OzwaldClient, core: FakeCore) -> None:
    client.update([ON_DEMAND, QWEN])
    assert client.wake("chat").message == "wake of chat accepted"
    assert client.sleep("chat").instance is None
    assert core.nudges == [("chat", "wake"), ("chat", "sleep")]
    core.on_demand_services = {"fiction-sources"}
    with pytest.raises(OzwaldAPIError) as refused:
        client.wake("qwen1.5-vllm")
    assert refused.value.status == 409 and "not on demand" in refused.value.detail
    with pytest.raises(OzwaldAPIError) as unknown:
        client.sleep("no such")  # quoted into one path segment
    assert unknown.value.status == 404 and "'no such'" in unknown.value.detail


def test_wake_with_a_wait_longer_than_one_request_follows_the_statuses(client: OzwaldClient, core: FakeCore,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's blocking request runs out (here at once) before the instance is available: the client goes
    on waiting on the statuses until it is."""
    monkeypatch.setattr(ozwald.client, "NUDGE_WAIT_S", 0.0)  # the wake's own wait ends at once, as after 60 s
    client.update([ON_DEMAND])

    def wake_later(name: str, operation: str) -> None:
        def watched() -> None:  # once the client waits on the statuses, the instance becomes available
            core.await_active_waits(1)
            core.set_status(name, "available")
        threading.Thread(target=watched, daemon=True).start()

    core.on_nudge = wake_later
    answer = client.wake("chat", wait=30)
    assert answer.settled is True and answer.instance is not None and answer.instance.status == "available"


def test_sleep_with_a_wait_that_runs_out_is_not_settled(client: OzwaldClient, core: FakeCore) -> None:
    client.update([ON_DEMAND])
    answer = client.sleep("chat", wait=0)
    assert answer.settled is False and answer.instance is not None and answer.instance.status == "starting"
