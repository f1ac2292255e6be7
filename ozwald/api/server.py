# SPDX-License-Identifier: AGPL-3.0-or-later
"""Serve the API with Waitress (`ApiServer`): in the foreground (`run`) or in a background thread (`start`).

Waitress's own error answers (malformed request, body or headers too large) are turned into JSON
too, and never echo what the client sent: a malformed header line may well carry a token.
Nothing here logs requests, so no header ever reaches a log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from typing import Any

import waitress
from waitress import channel as waitress_channel
from waitress import server as waitress_server
from waitress import task as waitress_task
from waitress import wasyncore

from ozwald.api.app import JSON_TYPE, create_app
from ozwald.api.core import ProvisionerCore
from ozwald.api.parse import MAX_BODY_BYTES, error_body

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_THREADS = 8  # 4 (Waitress's default) collapses at 32 concurrent connections
# Waitress refuses bodies from this size on, before buffering them; the app enforces MAX_BODY_BYTES
# exactly. The slack lets chunked framing through, so that the app can answer with the precise limit.
WAITRESS_BODY_LIMIT = MAX_BODY_BYTES + 64 * 1024
LINGER_BYTES = 64 * 1024 * 1024  # what a refused client may still send, read and dropped, before the close
LINGER_S = 10.0


class JsonErrorTask(waitress_task.ErrorTask):  # type: ignore[misc]  # waitress is untyped
    """Waitress's error answer, as `{"detail": ...}` JSON that never repeats the request's text."""

    def execute(self) -> None:
        error = self.request.error
        code = int(getattr(error, "code", 500))
        reason = str(getattr(error, "reason", "Internal Server Error"))
        if code == 413:
            detail = f"request body too large: at most {MAX_BODY_BYTES} bytes"
            self.channel.linger = True
        elif code == 500:
            detail = "internal error"
        else:
            detail = reason.lower()
        body = error_body(detail)
        self.status = f"{code} {reason}"
        self.response_headers.append(("Content-Type", JSON_TYPE))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(waitress_channel.HTTPChannel):  # type: ignore[misc]  # waitress is untyped
    """Waitress's channel, with a lingering close after a refused body.

    Waitress answers 413 as soon as the headers announce too large a body, then closes the socket while the
    client is still sending it. Closing a socket with unread data makes the kernel send a reset, and a
    client that sends its whole body before reading (urllib, curl without Expect) sees "connection reset"
    instead of the 413. So after the answer is out, this channel shuts down only its sending side and reads
    and drops what the client still sends, up to LINGER_BYTES or LINGER_S, before closing.
    """

    error_task_class = JsonErrorTask
    linger = False  # set by the error task that refuses a body
    _lingering_until: float | None = None
    _lingered = 0

    def handle_close(self) -> None:
        if self.linger and self._lingering_until is None and self.connected:
            self._lingering_until = time.monotonic() + LINGER_S
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                super().handle_close()
                return
            self.will_close = False
            return
        super().handle_close()

    def readable(self) -> bool:
        return True if self._lingering_until is not None else bool(super().readable())

    def writable(self) -> bool:
        if self._lingering_until is not None:  # only to close once the time is up (or maintenance asks)
            return self.will_close or time.monotonic() > self._lingering_until
        return bool(super().writable())

    def handle_write(self) -> None:
        if self._lingering_until is not None:
            super().handle_close()
            return
        super().handle_write()

    def received(self, data: bytes) -> bool:
        if self._lingering_until is None:
            return bool(super().received(data))
        self._lingered += len(data)
        if self._lingered > LINGER_BYTES or time.monotonic() > self._lingering_until:
            super().handle_close()
        return False


class ApiServer:
    """The API on a Waitress server, bound as soon as it is created (port 0 picks a free port).

    Call `run()` to serve in the current thread until `close()` (or Ctrl-C), or `start()` to serve in
    a daemon thread; `close()` stops either and is idempotent. Also a context manager.
    """

    def __init__(
        self,
        core: ProvisionerCore,
        key: str,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        threads: int = DEFAULT_THREADS,
        metrics: bool = True,
        **adjustments: Any,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        # Blocking queries may hold all but two threads, so a POST or a health check always finds one.
        self._closing = threading.Event()
        self.app = create_app(core, key, max_waiters=max(1, threads - 2), closing=self._closing,  # checks the key
                              metrics=metrics)
        settings: dict[str, Any] = {
            "max_request_body_size": WAITRESS_BODY_LIMIT,
            "expose_tracebacks": False,
            "ident": "ozwald",
        }
        settings.update(adjustments)
        self._server = waitress.create_server(self.app, host=host, port=port, threads=threads, **settings)
        self._map: dict[int, Any] = getattr(self._server, "_map", None) or self._server.map
        for dispatcher in [self._server, *self._map.values()]:
            if isinstance(dispatcher, waitress_server.BaseWSGIServer):
                dispatcher.channel_class = JsonErrorChannel
        listening = getattr(self._server, "effective_listen", None)
        if listening:
            self.host, self.port = str(listening[0][0]), int(listening[0][1])
        else:
            self.host, self.port = str(self._server.effective_host), int(self._server.effective_port)
        self._stop = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._loop_done = threading.Event()

    @property
    def threads(self) -> int:
        """How many worker threads answer requests."""
        return int(self._server.adj.threads)

    @property
    def url(self) -> str:
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until close() is called (from another thread) or Ctrl-C."""
        with self._lock:
            if self._stop.is_set():
                return
            self._running = True
            self._loop_thread = threading.current_thread()
        timeout = float(self._server.adj.asyncore_loop_timeout)
        use_poll = bool(self._server.adj.asyncore_use_poll)
        try:
            while not self._stop.is_set() and self._map:
                wasyncore.loop(timeout=timeout, use_poll=use_poll, map=self._map, count=1)
        except (KeyboardInterrupt, SystemExit):
            log.info("API server interrupted")
        finally:
            self._shutdown()
            self._loop_done.set()

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; returns the thread."""
        if self._thread is not None:
            raise RuntimeError("the API server is already started")
        self._thread = threading.Thread(target=self.run, name=f"ozwald-api-{self.port}", daemon=True)
        self._thread.start()
        return self._thread

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving: stop accepting, finish the worker threads, close every connection. Idempotent."""
        self._closing.set()  # blocked queries answer within a second instead of holding the shutdown
        with self._lock:
            self._stop.set()
            running = self._running
        if not running:
            self._shutdown()
        elif self._loop_thread is not threading.current_thread():
            self._wake()
            self._loop_done.wait(timeout)

    def _wake(self) -> None:
        for dispatcher in [self._server, *list(self._map.values())]:
            trigger = getattr(dispatcher, "trigger", None)
            if trigger is not None:
                with contextlib.suppress(OSError):
                    trigger.pull_trigger()
                return

    def _shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_server(
    core: ProvisionerCore,
    key: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    threads: int = DEFAULT_THREADS,
    metrics: bool = True,
    **adjustments: Any,
) -> ApiServer:
    """Create and bind the API server without serving yet. Raises ApiKeyError for an unusable key."""
    return ApiServer(core, key, host=host, port=port, threads=threads, metrics=metrics, **adjustments)
