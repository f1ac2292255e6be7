# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /metrics through the real server: the token, the text format, request counts and waiting queries."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from ozwald.api import create_server
from tests.api.conftest import API_KEY, Api, FakeCore

TEXT = "text/plain; version=0.0.4; charset=utf-8"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_total(text: str, method: str, route: str, code: int) -> float:
    return samples(text).get(("ozwald_api_requests_total",
                              frozenset({"method": method, "route": route, "code": str(code)}.items())), 0.0)


def test_metrics_need_the_token(api: Api) -> None:
    assert api.get("/metrics", token=None).status == 401
    assert api.get("/metrics", token="wrong-key-0123456789abcdef").status == 401
    reply = api.get("/metrics")
    assert reply.status == 200 and reply.header("Content-Type") == TEXT
    assert b"ozwald_build_info{" in reply.body


def test_requests_are_counted_by_route_and_code_with_bounded_labels(core: FakeCore) -> None:
    with create_server(core, API_KEY, host="127.0.0.1", port=0, threads=4) as server:
        server.start()
        api = Api(server)
        api.get("/srv/services/active/")
        api.get("/srv/services/active")  # the slash twin counts under the documented route
        api.get("/srv/services/active/", token=None)
        api.post("/srv/services/active/update/", [{"name": "nope"}])
        api.get("/no/such/path/a1b2c3")
        api.request("BREW", "/srv/services/active/")
        text = api.get("/metrics").body.decode()
    assert requests_total(text, "GET", "/srv/services/active/", 200) == 2
    assert requests_total(text, "GET", "/srv/services/active/", 401) == 1
    assert requests_total(text, "POST", "/srv/services/active/update/", 400) == 1
    assert requests_total(text, "GET", "other", 404) == 1
    assert requests_total(text, "other", "other", 405) == 1
    routes = {dict(labels)["route"] for name, labels in samples(text) if name == "ozwald_api_requests_total"}
    assert "/no/such/path/a1b2c3" not in routes and "/srv/services/active" not in routes


def test_blocking_queries_waiting_are_a_gauge(core: FakeCore) -> None:
    with create_server(core, API_KEY, host="127.0.0.1", port=0, threads=8) as server:
        server.start()
        api = Api(server)
        current = api.get("/srv/services/active/").header("X-Ozwald-Revision")

        def waiting() -> float:
            return samples(api.get("/metrics").body.decode())[("ozwald_api_blocking_queries_waiting", frozenset())]

        assert waiting() == 0
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(api.get, f"/srv/services/active/?after={current}&wait=30") for _ in range(3)]
            deadline = time.monotonic() + 10
            while waiting() < 3 and time.monotonic() < deadline:
                threading.Event().wait(0.02)
            assert waiting() == 3
            assert api.post("/srv/services/active/update/", [{"name": "qwen1.5-vllm", "variety": "cpu-only"}]
                            ).status == 202
            assert [a.result(10).status for a in answers] == [200, 200, 200]
        assert waiting() == 0
        limit = samples(api.get("/metrics").body.decode())[("ozwald_api_blocking_queries_limit", frozenset())]
        assert limit == 6


def test_metrics_off_answers_404_and_never_loads_prometheus_client() -> None:
    script = """
import http.client, sys
from ozwald.api import create_server
from tests.api.conftest import API_KEY, FakeCore
with create_server(FakeCore(), API_KEY, host="127.0.0.1", port=0, metrics=False) as server:
    server.start()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    reply = conn.getresponse()
    print(reply.status, reply.read().decode())
    print("loaded" if any(m.startswith("prometheus_client") for m in sys.modules) else "not loaded")
"""
    # FakeCore's own metrics() imports the families lazily too; the test checks the app, in a fresh interpreter
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines()[0].startswith('404 {"detail":"not found: metrics are off')
    assert out.stdout.splitlines()[-1] == "not loaded", out.stdout
