# SPDX-License-Identifier: AGPL-3.0-or-later
"""The Waitress server: defaults, lifecycle in a thread, concurrency, and JSON even when Bottle gives up."""

from __future__ import annotations

import http.client
import inspect
import json
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ozwald.api import ApiServer, create_server
from tests.api.conftest import API_KEY, FakeCore


def _get(server: ApiServer, path: str, key: str | None = API_KEY) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def test_defaults_bind_loopback_with_eight_threads() -> None:
    for function in (create_server, ApiServer):
        parameters = inspect.signature(function).parameters
        assert parameters["host"].default == "127.0.0.1"
        assert parameters["port"].default == 8000
        assert parameters["threads"].default == 8
    with create_server(FakeCore(), API_KEY, port=0) as server:
        assert server.host == "127.0.0.1"
        assert server.threads == 8
        assert server.url == f"http://127.0.0.1:{server.port}"


def test_start_and_close_in_a_thread() -> None:
    server = create_server(FakeCore(), API_KEY, port=0)
    thread = server.start()
    assert _get(server, "/health")[0] == 200
    server.close()
    assert not thread.is_alive()
    assert _refuses_connections(server.host, server.port)
    server.close()  # idempotent


def test_run_in_the_foreground_until_closed_from_elsewhere() -> None:
    server = create_server(FakeCore(), API_KEY, port=0, threads=2)
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        assert _get(server, "/srv/services/active/")[0] == 200
    finally:
        server.close()
        runner.join(10)
    assert not runner.is_alive()
    assert _refuses_connections(server.host, server.port)


def test_close_before_run_releases_the_port() -> None:
    server = create_server(FakeCore(), API_KEY, port=0)
    server.close()
    server.run()  # returns at once
    assert _refuses_connections(server.host, server.port)


def test_invalid_thread_count() -> None:
    with pytest.raises(ValueError, match="threads"):
        create_server(FakeCore(), API_KEY, port=0, threads=0)


def test_many_concurrent_connections(server: ApiServer, core: FakeCore) -> None:
    barrier = threading.Barrier(32)

    def one(_: int) -> int:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=20)
        try:
            conn.connect()
            barrier.wait(10)
            conn.request("GET", "/srv/services/active/", headers={"Authorization": f"Bearer {API_KEY}"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(one, range(32)))
    assert statuses == [200] * 32


def test_keep_alive_connection_serves_many_requests(server: ApiServer, core: FakeCore) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        for _ in range(20):
            conn.request("GET", "/srv/services/active", headers={"Authorization": f"Bearer {API_KEY}"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read()) == []
    finally:
        conn.close()


def test_an_error_escaping_bottle_is_json_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Bottle's catch-all is off: Waitress logs the error and answers through the JSON error task."""
    with create_server(FakeCore(), API_KEY, port=0) as server:
        server.start()

        def broken_match(environ: Any) -> Any:
            raise RuntimeError("router exploded")

        server.app.router.match = broken_match
        with caplog.at_level(logging.ERROR):
            status, headers, body = _get(server, "/srv/services/active/")
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"detail": "internal error"}
    assert b"router exploded" not in body and b"<" not in body
    assert "router exploded" in caplog.text
