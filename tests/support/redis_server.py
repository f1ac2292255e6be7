# SPDX-License-Identifier: AGPL-3.0-or-later
"""Real redis-server instances for the tests that need Redis (state, provisioner core).

Like rq, these tests run against a real Redis: transactions, reconnection after a restart and AUTH
errors are exactly what a fake would get wrong. A missing redis-server is a test
failure, not a skip, so CI cannot go green without having run them.

- `redis_server` (session): an instance on a free loopback port and a unix socket, without
  persistence (`--save "" --appendonly no`), so `restart()` brings it back empty, as a Redis comes
  back whose data was lost.
- `redis_client`: Ozwald's client of it (`ozwald.state.resp.Client`), on a freshly flushed database.
- `reference_client`: redis-py's client of the same database: an independent reader and writer for
  checking what Ozwald's client did (redis-py is a test dependency only).
- `restart_redis`: a function that restarts that instance, empty.
- `redis_password_server` (session): a second instance that requires a password.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from ozwald.config.model import RedisParameters
from ozwald.state.redis_conn import connect
from ozwald.state.resp import Client

REDIS_SERVER_ENV = "OZWALD_TEST_REDIS_SERVER"
PASSWORD = "s3cret-Pa55word-never-shown"


def redis_server_binary() -> str:
    candidates = [os.environ.get(REDIS_SERVER_ENV), shutil.which("redis-server"), "/usr/bin/redis-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "redis-server is not installed: the state tests need a real Redis. Install the Debian package "
        f"`redis-server` (make system-deps does, as root), or point ${REDIS_SERVER_ENV} at a redis-server binary.",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; restart() keeps its port and socket so existing clients reconnect."""

    def __init__(self, binary: str, workdir: Path, password: str | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.socket_path = str(workdir / "redis.sock")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        last_error = ""
        for _ in range(3):  # a free port can be taken between free_port() and the bind
            port = self.port or free_port()
            log_path = self.workdir / "redis.log"
            args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--unixsocket", self.socket_path, "--unixsocketperm", "700", "--dir", str(self.workdir),
                    "--daemonize", "no", "--logfile", str(log_path), "--protected-mode", "no"]
            if self.password:
                args += ["--requirepass", self.password]
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready(port):
                self.port = port
                return
            self.stop()
            last_error = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
        pytest.fail(f"redis-server did not start: {last_error}", pytrace=False)

    def _wait_ready(self, port: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        probe = redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.02)
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        """Stop and start again, empty: the server runs without persistence."""
        self.stop()
        self.start()

    def params(self, **overrides: object) -> RedisParameters:
        values: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "db": 0}
        if self.password:
            values["password"] = SecretStr(self.password)
        values.update(overrides)
        return RedisParameters.model_validate(values)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), tmp_path_factory.mktemp("redis-auth"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Client]:
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test that stopped it and failed before restarting must not break the next
    client = connect(redis_server.params())
    client.execute("FLUSHALL")
    yield client
    client.close()


@pytest.fixture
def reference_client(redis_server: RedisServer, redis_client: Client) -> Iterator[redis.Redis]:
    """redis-py on the same database as `redis_client` (which flushed it)."""
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0, decode_responses=True,
                         socket_timeout=5, socket_connect_timeout=2)
    yield client
    client.close()


@pytest.fixture
def restart_redis(redis_server: RedisServer) -> Callable[[], None]:
    """Restart the session's Redis; it comes back empty, and clients reconnect to the same port."""
    return redis_server.restart


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"
