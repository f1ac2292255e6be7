# SPDX-License-Identifier: AGPL-3.0-or-later
"""Tests of the test-host harness and of the stand-in model server it bakes into an image.

The server tests run server.py directly on loopback and need nothing special. The host tests
need root and boot real systemd-nspawn guests; they prove what Ozwald's integration tests rely on:
systemd runs, the images exist, a hand-written Quadlet unit starts a container whose published
port answers from this machine, stopping works, and several hosts run side by side.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testhost.harness import BUSYBOX_IMAGE, IMAGES, TESTSERVER_IMAGE, TestHost, cgroup_roots

SERVER = Path(__file__).resolve().parents[2] / "contrib" / "images" / "testserver" / "server.py"

# Never go through a proxy: every address these tests talk to is loopback or a test host's veth.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, body: object | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """GET (or POST JSON when body is given) and return (status, decoded JSON body)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_http(url: str, *, status: int = 200, timeout: float = 20.0) -> Any:
    """Poll url until it answers with status; return the body."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            code, body = fetch(url, timeout=2.0)
            if code == status:
                return body
            last = (code, body)
        except (OSError, http.client.HTTPException) as err:
            last = err
        time.sleep(0.02)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s; last: {last!r}")


# --------------------------------------------------------------------------------------------
# The stand-in model server, run directly (no root needed)
# --------------------------------------------------------------------------------------------


class Server:
    """server.py running as a subprocess on 127.0.0.1 with a free port."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.port = 0

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"serving model .* on 127\.0\.0\.1:(\d+)", self.log.read_text())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.01)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start server.py with extra environment variables; killed after the test if still running."""
    servers: list[Server] = []

    def start(wait: bool = True, **env: str) -> Server:
        log = tmp_path / f"server-{len(servers)}.log"
        environ = {**os.environ, "HOST": "127.0.0.1", "PORT": "0", **env}
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, str(SERVER)], env=environ, stdout=out, stderr=out)
        server = Server(proc, log)
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def test_server_endpoints(start_server: Callable[..., Server]) -> None:
    server = start_server(MODEL_NAME="unit-model", FOO="bar")
    assert fetch(server.url("/health")) == (200, {"status": "ok"})

    status, models = fetch(server.url("/v1/models"))
    assert status == 200
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["unit-model"]

    status, body = fetch(server.url("/v1/completions"), {"model": "whatever", "prompt": "hello there"})
    assert status == 200
    assert body["object"] == "text_completion"
    assert body["model"] == "unit-model"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [{"text": "hello there", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}

    status, body = fetch(server.url("/v1/completions"), {"prompt": ["a", "b c"]})
    assert status == 200
    assert [c["text"] for c in body["choices"]] == ["a", "b c"]

    status, body = fetch(server.url("/v1/chat/completions"), {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi"}

    status, env = fetch(server.url("/env"))
    assert status == 200
    assert env["FOO"] == "bar"
    assert env["MODEL_NAME"] == "unit-model"

    status, info = fetch(server.url("/info"))
    assert status == 200
    assert info["pid"] == server.proc.pid
    assert info["port"] == server.port

    assert fetch(server.url("/nope"))[0] == 404
    assert fetch(server.url("/v1/completions"), b"{not json")[0] == 400
    assert fetch(server.url("/v1/completions"), {"prompt": 3})[0] == 400
    assert "GET /health" in server.log.read_text()  # it logs requests to stderr


def test_server_start_delay(start_server: Callable[..., Server]) -> None:
    started = time.monotonic()
    server = start_server(START_DELAY_S="0.8")
    assert fetch(server.url("/health")) == (503, {"status": "starting"})
    assert fetch(server.url("/v1/completions"), {"prompt": "x"})[0] == 503
    wait_http(server.url("/health"), timeout=5)
    assert time.monotonic() - started >= 0.8
    assert fetch(server.url("/v1/completions"), {"prompt": "x"})[0] == 200


def test_server_never_healthy(start_server: Callable[..., Server]) -> None:
    server = start_server(NEVER_HEALTHY="1")
    assert fetch(server.url("/health")) == (503, {"status": "unhealthy"})
    assert fetch(server.url("/v1/models"))[0] == 200  # serving, just never reporting healthy


def test_server_exit_code(start_server: Callable[..., Server]) -> None:
    server = start_server(wait=False, EXIT_CODE="3")
    assert server.proc.wait(timeout=10) == 3
    assert "serving" not in server.log.read_text()


def test_server_crash_after(start_server: Callable[..., Server]) -> None:
    server = start_server(CRASH_AFTER_S="0.5")
    assert fetch(server.url("/health"))[0] == 200
    assert server.proc.wait(timeout=10) != 0
    assert "CRASH_AFTER_S" in server.log.read_text()


def test_server_alloc(start_server: Callable[..., Server]) -> None:
    server = start_server(ALLOC_MIB="64")
    assert fetch(server.url("/info"))[1]["allocated_mib"] == 64
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    rss_kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert rss_kib >= 64 * 1024


def test_server_sigterm(start_server: Callable[..., Server]) -> None:
    server = start_server()
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=5) == 0
    assert time.monotonic() - sent < 1.0


# --------------------------------------------------------------------------------------------
# The test host (root)
# --------------------------------------------------------------------------------------------

ECHO_UNIT = "th-echo"
ECHO_PORT = 8000
ECHO_QUADLET = f"""\
[Unit]
Description=test-host check: OpenAI-compatible test server

[Container]
Image={TESTSERVER_IMAGE}
ContainerName={ECHO_UNIT}
PublishPort={ECHO_PORT}:8000
Environment=MODEL_NAME=quadlet-echo

[Service]
TimeoutStartSec=30
"""


def test_boots_running(testhost: TestHost) -> None:
    state = testhost.exec(["systemctl", "is-system-running"]).stdout.strip()
    assert state == "running", f"failed units: {testhost.list_failed_units()}\n{testhost.journal(lines=50)}"
    assert testhost.failed_units == []
    assert testhost.read_file("/etc/os-release").count("VERSION_CODENAME=trixie") == 1
    assert testhost.exec(["hostname"]).stdout.strip() == testhost.name
    assert testhost.read_file("/etc/machine-id").strip() == testhost.machine_id
    assert re.fullmatch(r"10\.213\.\d+\.2", testhost.ip)
    assert testhost.rootfs.is_dir()


def test_images_exist(testhost: TestHost) -> None:
    for image in IMAGES:
        assert testhost.exec(["podman", "image", "exists", image]).returncode == 0, image
    # Runs like a service would (systemd-run, so under nspawn's seccomp filter).
    result = testhost.run(["podman", "run", "--rm", "--network=none", BUSYBOX_IMAGE, "echo", "hi"])
    assert (result.returncode, result.stdout.strip()) == (0, "hi"), result.stderr


def test_files_and_journal(testhost: TestHost) -> None:
    testhost.write_file("/etc/ozwald-test/hello.txt", "hello\n", mode=0o600)
    assert testhost.read_file("/etc/ozwald-test/hello.txt") == "hello\n"
    assert testhost.exec(["stat", "-c", "%a", "/etc/ozwald-test/hello.txt"]).stdout.strip() == "600"
    result = testhost.run(["sh", "-c", "echo from-a-service; cat /etc/ozwald-test/hello.txt"], check=True)
    assert result.stdout == "from-a-service\nhello\n"
    assert testhost.name in testhost.journal(lines=20)


def test_quadlet_testserver_answers_from_host(testhost: TestHost) -> None:
    testhost.write_file(f"/etc/containers/systemd/{ECHO_UNIT}.container", ECHO_QUADLET)
    t0 = time.monotonic()
    result = testhost.run(["sh", "-c", f"systemctl daemon-reload && systemctl start {ECHO_UNIT}.service"])
    assert result.returncode == 0, f"{result.stderr}\n{testhost.journal(ECHO_UNIT + '.service')}"
    started = time.monotonic()
    assert testhost.systemctl("is-active", f"{ECHO_UNIT}.service").stdout.strip() == "active"

    health = wait_http(testhost.url(ECHO_PORT, "/health"))
    answered = time.monotonic()
    assert health == {"status": "ok"}
    status, body = fetch(testhost.url(ECHO_PORT, "/v1/completions"), {"model": "x", "prompt": "from the host"})
    assert status == 200
    assert body["choices"][0]["text"] == "from the host"
    assert body["model"] == "quadlet-echo"
    assert "serving model 'quadlet-echo'" in testhost.journal(f"{ECHO_UNIT}.service")

    t1 = time.monotonic()
    testhost.run(["systemctl", "stop", f"{ECHO_UNIT}.service"], check=True)
    stopped = time.monotonic()
    assert testhost.systemctl("is-active", f"{ECHO_UNIT}.service", check=False).stdout.strip() == "inactive"
    with pytest.raises(OSError):
        fetch(testhost.url(ECHO_PORT, "/health"), timeout=2)
    print(
        f"\nquadlet: reload+start {started - t0:.2f} s, first HTTP answer {answered - t0:.2f} s, "
        f"stop {stopped - t1:.2f} s"
    )
    (testhost.guest_path(f"/etc/containers/systemd/{ECHO_UNIT}.container")).unlink()
    testhost.systemctl("daemon-reload")


def test_podman_api_and_bus_from_host(testhost: TestHost) -> None:
    path = testhost.podman_socket.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"OK"), reply

    jeepney = pytest.importorskip("jeepney")
    from jeepney.io.blocking import open_dbus_connection

    systemd = jeepney.DBusAddress(
        "/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1", interface="org.freedesktop.DBus.Properties"
    )
    with open_dbus_connection(bus=testhost.bus_address) as conn:
        msg = jeepney.new_method_call(systemd, "Get", "ss", ("org.freedesktop.systemd1.Manager", "Version"))
        reply_msg = conn.send_and_get_reply(msg, timeout=10)
    version = reply_msg.body[0][1]
    assert int(version.split(".")[0].split("~")[0]) >= 257, version


def test_two_hosts_at_once(testhost_factory: Callable[[], TestHost]) -> None:
    hosts = [testhost_factory(), testhost_factory()]
    assert len({h.name for h in hosts}) == 2
    assert len({h.ip for h in hosts}) == 2
    assert len({h.pid1 for h in hosts}) == 2
    assert len({h.machine_id for h in hosts}) == 2
    for host in hosts:
        assert host.exec(["systemctl", "is-system-running"]).stdout.strip() == "running", host.list_failed_units()
        # A plain service per host, reached from here over each host's own address.
        host.exec(
            ["systemd-run", "--unit=th-web", "--", "python3", "-m", "http.server", "9000", "--bind", host.ip],
            check=True,
        )
    for host in hosts:
        url = f"http://{host.ip}:9000/etc/hostname"
        deadline = time.monotonic() + 10
        while True:
            try:
                with OPENER.open(url, timeout=2) as response:
                    assert response.read().decode().strip() == host.name
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # Teardown leaves nothing behind: process, copy, cgroups, veth.
    host = hosts[0]
    pid1, workdir, ifname, name = host.pid1, host.statedir.parent, host.host_ifname, host.name
    host.stop()
    assert not Path(f"/proc/{pid1}").exists()
    assert not workdir.exists()
    assert not Path(f"/sys/class/net/{ifname}").exists()
    assert not any((root / name).exists() for root in cgroup_roots())
    assert host.timings["stop_s"] < 10
    host.stop()  # idempotent
    assert hosts[1].exec(["systemctl", "is-system-running"]).stdout.strip() == "running"
