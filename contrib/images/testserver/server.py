#!/usr/bin/env python3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""A small OpenAI-compatible stand-in for an AI model server, for Ozwald's tests.

It uses only the Python standard library so that it runs from a minimal python3 tree inside a
container image (``localhost/ozwald-testserver:latest`` on the test host) and directly on a
developer's machine. Real model servers are large, slow and need GPUs; this one lets tests
exercise what Ozwald actually cares about — startup, health, readiness, crashes, memory use,
environment passing and stopping — in milliseconds.

Endpoints:

- ``GET /health``: 200 ``{"status": "ok"}`` once healthy, 503 while starting or when told to
  never become healthy.
- ``GET /v1/models``: the one model this server serves.
- ``POST /v1/completions``: echoes the prompt back as the completion, in OpenAI's shape.
- ``POST /v1/chat/completions``: echoes the last message back, in OpenAI's shape.
- ``GET /env``: the process environment as a JSON object (so tests can check what the
  provisioner passed in).
- ``GET /info``: pid, uptime, port, model and how much memory was allocated.

Behaviour switches (environment variables):

- ``PORT`` (default 8000) and ``HOST`` (default ``0.0.0.0``): where to listen.
- ``MODEL_NAME`` (default ``ozwald-test-model``): the model id reported everywhere.
- ``START_DELAY_S``: listen at once but answer 503 on ``/health`` and the ``/v1`` endpoints
  until this many seconds have passed, like a server still loading weights.
- ``NEVER_HEALTHY``: if set to a true value, ``/health`` always answers 503.
- ``EXIT_CODE``: exit at once with this code, before listening (a server that fails to start).
- ``CRASH_AFTER_S``: exit with code 1 this many seconds after starting (a server that dies).
- ``ALLOC_MIB``: allocate and touch this many MiB at startup (a server that uses memory).

SIGTERM and SIGINT make it exit 0 at once. It logs to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_PORT = 8000
DEFAULT_MODEL = "ozwald-test-model"
CRASH_EXIT_CODE = 1
PAGE = 4096

TRUE_VALUES = {"1", "true", "yes", "on"}


def log(message: str) -> None:
    """Write one line to stderr, where journald (through conmon) picks it up."""
    sys.stderr.write(f"testserver[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


def env_float(name: str) -> float | None:
    """Read a number of seconds from the environment; unset or empty means None."""
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


def env_flag(name: str) -> bool:
    """Read a boolean switch from the environment."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


class State:
    """What the request handlers need to know about this server process."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.created = int(time.time())
        self.model = os.environ.get("MODEL_NAME", "").strip() or DEFAULT_MODEL
        self.start_delay = env_float("START_DELAY_S") or 0.0
        self.never_healthy = env_flag("NEVER_HEALTHY")
        self.port = int(os.environ.get("PORT", "").strip() or DEFAULT_PORT)
        self.host = os.environ.get("HOST", "").strip() or "0.0.0.0"  # noqa: S104 - it is a server
        self.ballast: bytearray | None = None
        self.allocated_mib = 0

    def ready(self) -> bool:
        """True once the simulated loading time has passed."""
        return time.monotonic() - self.started >= self.start_delay

    def healthy(self) -> bool:
        """True when /health should answer 200."""
        return self.ready() and not self.never_healthy

    def allocate(self, mib: int) -> None:
        """Allocate ``mib`` MiB and write to every page so it counts as resident memory."""
        ballast = bytearray(mib * 1024 * 1024)
        for offset in range(0, len(ballast), PAGE):
            ballast[offset] = 1
        self.ballast = ballast
        self.allocated_mib = mib


STATE: State


def count_tokens(text: str) -> int:
    """A crude token count (whitespace-separated words), good enough for a usage block."""
    return len(text.split())


class Handler(BaseHTTPRequestHandler):
    """Routes the few endpoints the tests need."""

    server_version = "ozwald-testserver/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.address_string()} {format % args}")

    def send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def read_json(self) -> dict[str, Any] | None:
        """The request body as a JSON object, or None after answering 400."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.send_error_json(400, "request body is not valid JSON")
            return None
        if not isinstance(body, dict):
            self.send_error_json(400, "request body must be a JSON object")
            return None
        return body

    def not_ready(self) -> bool:
        """Answer 503 and return True while the model is still 'loading'."""
        if STATE.ready():
            return False
        self.send_error_json(503, "model is still loading", "service_unavailable")
        return True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if STATE.healthy():
                self.send_json(200, {"status": "ok"})
            else:
                state = "unhealthy" if STATE.ready() else "starting"
                self.send_json(503, {"status": state})
        elif path == "/v1/models":
            if self.not_ready():
                return
            model = {"id": STATE.model, "object": "model", "created": STATE.created, "owned_by": "ozwald-test"}
            self.send_json(200, {"object": "list", "data": [model]})
        elif path == "/env":
            self.send_json(200, dict(os.environ))
        elif path == "/info":
            self.send_json(
                200,
                {
                    "pid": os.getpid(),
                    "uptime_s": time.monotonic() - STATE.started,
                    "port": STATE.port,
                    "model": STATE.model,
                    "allocated_mib": STATE.allocated_mib,
                    "ready": STATE.ready(),
                    "healthy": STATE.healthy(),
                },
            )
        else:
            self.send_error_json(404, f"no route for GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self.send_error_json(404, f"no route for POST {path}")
            return
        if self.not_ready():
            return
        body = self.read_json()
        if body is None:
            return
        if path == "/v1/completions":
            self.complete(body)
        else:
            self.chat(body)

    def complete(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt", "")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not all(isinstance(p, str) for p in prompts):
            self.send_error_json(400, "prompt must be a string or a list of strings")
            return
        choices = [{"text": p, "index": i, "logprobs": None, "finish_reason": "stop"} for i, p in enumerate(prompts)]
        tokens = sum(count_tokens(p) for p in prompts)
        self.send_json(200, self.envelope("cmpl", "text_completion", choices, tokens))

    def chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            self.send_error_json(400, "messages must be a non-empty list of objects")
            return
        content = str(messages[-1].get("content", ""))
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        self.send_json(200, self.envelope("chatcmpl", "chat.completion", [choice], count_tokens(content)))

    @staticmethod
    def envelope(prefix: str, kind: str, choices: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
        """OpenAI's response shape around the choices; the echo costs as many tokens as it gets."""
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": STATE.model,
            "choices": choices,
            "usage": {"prompt_tokens": tokens, "completion_tokens": tokens, "total_tokens": 2 * tokens},
        }


def on_signal(signum: int, _frame: object) -> None:
    """Stop at once with status 0: the main thread leaves serve_forever through SystemExit."""
    log(f"received signal {signum}, exiting")
    raise SystemExit(0)


def crash_later(delay: float) -> None:
    """Kill the whole process with a non-zero status after ``delay`` seconds."""

    def crash() -> None:
        time.sleep(delay)
        log(f"CRASH_AFTER_S={delay} reached, exiting with {CRASH_EXIT_CODE}")
        os._exit(CRASH_EXIT_CODE)

    threading.Thread(target=crash, name="crash", daemon=True).start()


def main() -> int:
    global STATE
    exit_code = os.environ.get("EXIT_CODE", "").strip()
    if exit_code:
        log(f"EXIT_CODE={exit_code}, exiting at once")
        return int(exit_code)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    STATE = State()
    alloc = os.environ.get("ALLOC_MIB", "").strip()
    if alloc:
        STATE.allocate(int(alloc))
        log(f"allocated {STATE.allocated_mib} MiB")
    crash_after = env_float("CRASH_AFTER_S")
    if crash_after is not None:
        crash_later(crash_after)
    server = ThreadingHTTPServer((STATE.host, STATE.port), Handler)
    server.daemon_threads = True
    STATE.port = server.server_address[1]
    log(f"serving model {STATE.model!r} on {STATE.host}:{STATE.port}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
