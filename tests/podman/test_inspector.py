# SPDX-License-Identifier: AGPL-3.0-or-later
"""PodmanInspector against a stand-in Podman API served on a unix socket (the real one is covered by the
test-host tests in tests/integration): the requests it sends and how it reads each answer."""

from __future__ import annotations

import json
import socketserver
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from ozwald.podman.inspector import PodmanInspector, PodmanUnavailable, demultiplex

INSPECT = {
    "Id": "abc123",
    "Name": "ozwald-one",
    "State": {"Status": "running", "Running": True, "ExitCode": 0, "OOMKilled": False,
              "StartedAt": "2026-01-02T03:04:05.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z",
              "Health": {"Status": "healthy", "FailingStreak": 0, "Log": [{"Output": "ok\n"}]}},
    "Config": {"Labels": {"ozwald.managed": "true"}},
}


def _frame(stream: int, text: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(text)) + text


class _Podman(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.seen.append(self.path)
        path, query = url.path, parse_qs(url.query)
        if path == "/v4.0.0/libpod/_ping":
            self._send(200, b"OK", "text/plain")
        elif path == "/v4.0.0/libpod/version":
            self._send(200, json.dumps({"Version": "5.4.2"}).encode())
        elif path == "/v4.0.0/libpod/images/localhost/busybox:latest/exists":
            self._send(204)
        elif path.endswith("/exists"):
            self._send(404, b'{"message": "no such image"}')
        elif path == "/v4.0.0/libpod/containers/json" and "name" in json.loads(query["filters"][0]):
            assert "all" not in query  # running containers only
            patterns = json.loads(query["filters"][0])["name"]
            assert patterns == ["^ozwald\\-one$", "^ozwald\\-gone$"]
            self._send(200, json.dumps([{"Id": "abc123", "Names": ["ozwald-one"]},
                                        {"Id": "zzz", "Names": ["ozwald-one-other"]}]).encode())
        elif path == "/v4.0.0/libpod/containers/json":
            assert query["all"] == ["true"]
            assert json.loads(query["filters"][0]) == {"label": ["ozwald.managed=true"]}
            self._send(200, json.dumps([{"Id": "abc123"}, {"Id": "gone"}]).encode())
        elif path in ("/v4.0.0/libpod/containers/abc123/json", "/v4.0.0/libpod/containers/ozwald-one/json"):
            self._send(200, json.dumps(INSPECT).encode())
        elif path == "/v4.0.0/libpod/containers/ozwald-one/logs":
            assert query == {"stdout": ["true"], "stderr": ["true"], "tail": ["2"]}
            self._send(200, _frame(1, b"first\n") + _frame(2, b"second\nthird\n"), "application/octet-stream")
        elif path == "/v4.0.0/libpod/containers/broken/json":
            self._send(500, b'{"message": "database is locked"}')
        else:
            self._send(404, b'{"message": "no such container"}')


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[PodmanInspector]:
    socket_path = tmp_path / "podman.sock"

    class Handler(_Podman):
        def address_string(self) -> str:  # a unix peer has no (host, port)
            return "unix"

    server = _UnixServer(str(socket_path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Podman.seen = []
    try:
        yield PodmanInspector(f"unix://{socket_path}", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_ping_and_version(podman: PodmanInspector) -> None:
    assert podman.ping() is True
    assert podman.version() == "5.4.2"


def test_image_exists_keeps_the_reference_whole(podman: PodmanInspector) -> None:
    assert podman.image_exists("localhost/busybox:latest") is True
    assert podman.image_exists("localhost/missing:latest") is False


def test_container_reads_the_inspect_data(podman: PodmanInspector) -> None:
    state = podman.container("ozwald-one")
    assert state is not None
    assert (state.id, state.name, state.running, state.health, state.last_health_output) == (
        "abc123", "ozwald-one", True, "healthy", "ok")
    assert state.started_at is not None and state.started_at.microsecond == 123456
    assert state.finished_at is None
    assert podman.container("ozwald-none") is None


def test_containers_lists_by_label_and_skips_those_gone(podman: PodmanInspector) -> None:
    assert [c.id for c in podman.containers()] == ["abc123"]


def test_logs_are_demultiplexed_and_cut_to_the_tail(podman: PodmanInspector) -> None:
    assert podman.logs("ozwald-one", tail=2) == ["second", "third"]
    assert podman.logs("ozwald-none") == []


def test_a_server_error_is_unavailable_with_podmans_message(podman: PodmanInspector) -> None:
    with pytest.raises(PodmanUnavailable, match="database is locked"):
        podman.container("broken")


def test_no_socket_is_unavailable(tmp_path: Path) -> None:
    podman = PodmanInspector(f"unix://{tmp_path}/absent.sock", timeout=1)
    assert podman.ping() is False
    with pytest.raises(PodmanUnavailable, match=r"absent\.sock"):
        podman.version()
    with pytest.raises(PodmanUnavailable):
        podman.container("x")
    with pytest.raises(PodmanUnavailable):
        podman.image_exists("x")


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported Podman URL"):
        PodmanInspector("ssh://core@host/run/podman.sock")


def test_demultiplex_passes_raw_tty_output_through() -> None:
    assert demultiplex(b"plain text\n") == b"plain text\n"
    assert demultiplex(_frame(1, b"a") + _frame(2, b"b")) == b"ab"
    assert demultiplex(b"") == b""


def test_running_ids_asks_once_for_exactly_these_names(podman: PodmanInspector) -> None:
    assert podman.running_ids(["ozwald-one", "ozwald-gone"]) == {"ozwald-one": "abc123"}
    assert len(_Podman.seen) == 1
    assert podman.running_ids([]) == {}
    assert len(_Podman.seen) == 1  # nothing asked
