# SPDX-License-Identifier: AGPL-3.0-or-later
"""The Bottle application: routes, bearer auth, body limits and JSON errors.

Every response is `application/json`; every error is `{"detail": ...}` (except the health check,
which answers its own shape). Each documented path also answers at its slash twin
(`/srv/services/active` as `/srv/services/active/`, `/srv/host/resources/` as
`/srv/host/resources`) with the same response and no redirect.

Per-request overhead is kept small on purpose: no Bottle plugins, no per-request schema building,
one dict lookup to route, one constant-time compare to authenticate, and (with metrics on) one counter
increment under a lock. `GET /metrics` answers the Prometheus text format (`ozwald.api.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import bottle
from pydantic import TypeAdapter

from ozwald.api.auth import bearer_matches, check_key
from ozwald.api.core import ProvisionerCore
from ozwald.api.parse import (
    ApiError,
    dumps,
    error_body,
    force_query,
    parse_service_requests,
    query,
    read_body,
    read_json,
    wait_query,
    watch_query,
)
from ozwald.errors import OzwaldError
from ozwald.records import (
    ActiveService,
    NudgeAccepted,
    NudgeOperation,
    NudgeWait,
    PlanEntry,
)

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"

_ACTIVE_LIST: TypeAdapter[list[ActiveService]] = TypeAdapter(list[ActiveService])
_PLAN_LIST: TypeAdapter[list[PlanEntry]] = TypeAdapter(list[PlanEntry])
_HEALTHY = b'{"status":"healthy"}'
_REASONS = {
    400: "bad request",
    401: "unauthorized",
    404: "not found",
    409: "request not admitted",
    405: "method not allowed",
    413: "request body too large",
    429: "too many requests",
    500: "internal error",
    503: "service unavailable",
}

REVISION_HEADER = "X-Ozwald-Revision"
WAIT_SLICE_S = 1.0  # a blocked request checks this often whether the server is closing
DEFAULT_MAX_WAITERS = 4

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

Environ = Mapping[str, Any]
Reply = tuple[int, bytes] | tuple[int, bytes, Mapping[str, str]]
Handler = Callable[..., Reply]  # (environ, **the path's parameters)
T = TypeVar("T")


class RequestCounts:
    """Answers by (method, route, status code), for `ozwald_api_requests_total`. The route is the documented
    path (its slash twin counts with it) or `other` for a path no route matches, and a method outside HTTP's
    usual ones is `other`: labels stay bounded whatever clients send."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], int] = {}

    def add(self, method: str, route: str, code: int) -> None:
        key = (method if method in METHODS else "other", route, code)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[tuple[str, str, int], int]:
        with self._lock:
            return dict(self._counts)


class JsonBottle(bottle.Bottle):  # type: ignore[misc]  # bottle is untyped
    """A Bottle whose own errors (404, 405, a bad path, an escaped exception) are JSON, never HTML."""

    counts: RequestCounts | None = None

    def default_error_handler(self, res: Any) -> bytes:
        bottle.response.content_type = JSON_TYPE
        code = int(getattr(res, "status_code", 500))
        if self.counts is not None:
            self.counts.add(str(bottle.request.environ.get("REQUEST_METHOD", "")), "other", code)
        reason = _REASONS.get(code)
        if reason is None:
            line = str(getattr(res, "status_line", "") or "")
            reason = line.partition(" ")[2].lower() or "error"
        return error_body(reason)


def _nudge_body(answer: NudgeAccepted) -> bytes:
    """The answer's JSON; `instance` and `settled` only with `wait` (the instance's own nulls are kept)."""
    body = answer.model_dump(mode="json")
    return dumps({key: value for key, value in body.items() if value is not None})


def twins(path: str) -> tuple[str, str]:
    """A documented path and its slash twin, the documented form first."""
    if path == "/":
        return path, path
    return (path, path.rstrip("/")) if path.endswith("/") else (path, path + "/")


class _Routes:
    """The endpoint handlers, bound to one core."""

    def __init__(self, core: ProvisionerCore, max_waiters: int, closing: threading.Event) -> None:
        self.core = core
        self.max_waiters = max_waiters
        self._waiters = threading.BoundedSemaphore(max_waiters)
        self._waiting_lock = threading.Lock()
        self.waiting = 0  # blocking queries waiting now (a gauge of the metrics)
        self._closing = closing
        self.exposition: Callable[[], tuple[bytes, str]] | None = None  # GET /metrics, when metrics are on
        # The last statuses served and their JSON. The core hands out the same list object for as long as
        # nothing changed, so every GET of one revision serves these bytes: serializing 100 statuses
        # with pydantic costs ~1 ms, the rest of a GET ~0.3 ms. Keyed on identity, not revision: a core
        # that builds a fresh list each call (no reconcile yet) is simply serialized each time.
        self._active_json: tuple[list[ActiveService], bytes] | None = None
        self._serializing = threading.Lock()

    def health(self, environ: Environ) -> Reply:
        try:
            components = dict(self.core.health())
        except Exception:
            log.exception("the health check failed")
            components = {"core": "health check failed"}
        if all(state == "ok" for state in components.values()):
            return 200, _HEALTHY
        return 503, dumps({"status": "unhealthy", "components": components})

    def configured(self, environ: Environ) -> Reply:
        return 200, dumps(self.core.configured_services())

    def _blocking(self, environ: Environ, watch: Callable[[int | None, float], tuple[int, T]]) -> tuple[int, T]:
        """With `after`, a blocking query: answered when the watched data differ from that revision, or after
        `wait` seconds. Each blocked request holds a server thread, so at most `max_waiters` may wait (the
        statuses' and the profiling queue's waiters together)."""
        after, wait = watch_query(environ)
        if after is None or wait == 0:
            return watch(after, 0)
        with self._waiter("or ask without after"):
            deadline = time.monotonic() + wait
            while True:
                left = deadline - time.monotonic()
                revision, data = watch(after, max(0.0, min(left, WAIT_SLICE_S)))
                if revision != after or left <= WAIT_SLICE_S or self._closing.is_set():
                    return revision, data

    @contextlib.contextmanager
    def _waiter(self, otherwise: str) -> Iterator[None]:
        """One of the `max_waiters` slots of a request that blocks, or 429 when all are taken."""
        if not self._waiters.acquire(blocking=False):
            raise ApiError(429, f"{self.max_waiters} requests are already waiting for a change; retry, "
                                f"{otherwise}", {"Retry-After": "1"})
        with self._waiting_lock:
            self.waiting += 1
        try:
            yield
        finally:
            with self._waiting_lock:
                self.waiting -= 1
            self._waiters.release()

    def active(self, environ: Environ) -> Reply:
        revision, services = self._blocking(environ, self.core.watch_active)
        return 200, self._active_body(services), {REVISION_HEADER: str(revision)}

    def _active_body(self, services: list[ActiveService]) -> bytes:
        cached = self._active_json  # one read: other threads may replace it meanwhile
        if cached is not None and cached[0] is services:
            return cached[1]
        # One thread serializes, the others take its bytes: the blocking queries one change wakes all get
        # here at once, and four serializations of 100 statuses competing for the interpreter made the
        # last answer wait for all four.
        with self._serializing:
            cached = self._active_json
            if cached is not None and cached[0] is services:
                return cached[1]
            body = _ACTIVE_LIST.dump_json(services)
            self._active_json = (services, body)
            return body

    def update(self, environ: Environ) -> Reply:
        force = force_query(environ)
        items = parse_service_requests(read_json(environ, "a JSON array of service requests"))
        desired = self.core.update(items, force=force)
        count = len(desired.instances)
        message = (f"desired set accepted: {count} instance{'' if count == 1 else 's'}, "
                   f"generation {desired.generation}")
        return 202, dumps({"status": "accepted", "message": message, "generation": desired.generation})

    def wake(self, environ: Environ, name: str) -> Reply:
        return self._nudge(environ, name, "wake")

    def sleep(self, environ: Environ, name: str) -> Reply:
        return self._nudge(environ, name, "sleep")

    def _nudge(self, environ: Environ, name: str, operation: NudgeOperation) -> Reply:
        """Wake or sleep an on-demand instance. With `wait`, a blocking query on the statuses: answered 200 with
        the instance's status once it reached the operation's target or failed, else 202 with it after `wait`
        seconds. The waiter's slot is taken before the nudge, so a 429 means nothing was done."""
        wait = wait_query(environ)
        read_body(environ)  # none is needed; one over the limit is still refused (413)
        nudge = self.core.wake if operation == "wake" else self.core.sleep
        if wait is None:
            return 202, _nudge_body(nudge(name))
        with self._waiter("or ask without wait") if wait > 0 else contextlib.nullcontext():
            revision, services = self.core.watch_active(None, 0)
            tracker = NudgeWait.before(name, operation, services)
            accepted = nudge(name)
            deadline = time.monotonic() + wait
            while True:
                instance, over = tracker.see(services)
                left = deadline - time.monotonic()
                if over or left <= 0 or self._closing.is_set():
                    break
                revision, services = self.core.watch_active(revision, min(left, WAIT_SLICE_S))
        answer = accepted.model_copy(update={"instance": instance, "settled": over})
        return 200 if over else 202, _nudge_body(answer), {REVISION_HEADER: str(revision)}

    def plan(self, environ: Environ) -> Reply:
        query(environ, frozenset())
        items = parse_service_requests(read_json(environ, "a JSON array of service requests"))
        return 200, _PLAN_LIST.dump_json(self.core.plan(items))

    def available(self, environ: Environ) -> Reply:
        return 200, dumps(self.core.available_resources())

    def host(self, environ: Environ) -> Reply:
        return 200, dumps(self.core.host_resources())

    def profile_list(self, environ: Environ) -> Reply:
        revision, queue = self._blocking(environ, self.core.watch_profile)
        return 200, dumps(queue), {REVISION_HEADER: str(revision)}

    def profile_results(self, environ: Environ) -> Reply:
        return 200, dumps(self.core.profile_results())

    def profile_enqueue(self, environ: Environ) -> Reply:
        body = read_json(environ, "a JSON profiling request")
        return 202, dumps(self.core.enqueue_profile(body))

    def metrics(self, environ: Environ) -> Reply:
        query(environ, frozenset())
        if self.exposition is None:
            raise ApiError(404, "not found: metrics are off (api.metrics in the provisioner's settings)")
        body, content_type = self.exposition()
        return 200, body, {"Content-Type": content_type}


def route_table(routes: _Routes) -> list[tuple[str, str, Handler, bool]]:
    """(method, documented path, handler, needs auth) for every endpoint."""
    return [
        ("GET", "/health", routes.health, False),
        ("GET", "/srv/services/configured/", routes.configured, True),
        ("GET", "/srv/services/active/", routes.active, True),
        ("POST", "/srv/services/active/update/", routes.update, True),
        ("POST", "/srv/services/active/plan/", routes.plan, True),
        ("POST", "/srv/services/active/{name}/wake", routes.wake, True),
        ("POST", "/srv/services/active/{name}/sleep", routes.sleep, True),
        ("GET", "/srv/resources/available/", routes.available, True),
        ("GET", "/srv/host/resources", routes.host, True),
        ("GET", "/srv/services/profile", routes.profile_list, True),
        ("POST", "/srv/services/profile", routes.profile_enqueue, True),
        ("GET", "/srv/services/profile/results", routes.profile_results, True),
        ("GET", "/metrics", routes.metrics, True),
    ]


def _endpoint(handler: Handler, key: bytes | None, route: str = "", counts: RequestCounts | None = None
              ) -> Callable[[], bytes]:
    """Wrap a handler with auth (when `key` is given), the error-to-JSON mapping and the request count."""
    request = bottle.request
    response = bottle.response

    def callback(**arguments: str) -> bytes:  # the path's {parameters}
        environ = request.environ
        content_type = JSON_TYPE
        try:
            if key is not None:
                matched = bearer_matches(environ, key)
                if not matched:
                    log.warning("unauthorized request (%s token): %s %r from %s",
                                "missing" if matched is None else "invalid", environ.get("REQUEST_METHOD"),
                                environ.get("PATH_INFO"), environ.get("REMOTE_ADDR"))
                    raise ApiError(401, "missing bearer token" if matched is None else "invalid bearer token",
                                   {"WWW-Authenticate": "Bearer"})
            reply = handler(environ, **arguments)
            status, body = reply[0], reply[1]
            if len(reply) == 3:
                for name, value in reply[2].items():
                    if name == "Content-Type":
                        content_type = value
                    else:
                        response.set_header(name, value)
        except OzwaldError as exc:
            if exc.http_status >= 500 and exc.http_status != 503:
                log.error("internal error answering %s %r", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                          exc_info=exc)
            status, body, headers = error_answer(exc)
            for name, value in headers.items():
                response.set_header(name, value)
        except Exception:
            log.exception("internal error answering %s %r", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, body = 500, error_body("internal error")
        if status != 200:
            response.status = status
        response.content_type = content_type
        if counts is not None:
            counts.add(str(environ.get("REQUEST_METHOD", "")), route, status)
        return body

    callback.__name__ = getattr(handler, "__name__", "endpoint")
    return callback


def bottle_rule(path: str) -> str:
    """A documented path as Bottle's rule: `{name}` (OpenAPI's parameter) is `<name>`, one path segment."""
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def error_answer(exc: OzwaldError) -> tuple[int, bytes, dict[str, str]]:
    """The one mapping of Ozwald's errors to answers: the status, `{"detail": ...}` and headers each
    error declares (`ozwald.errors`)."""
    status = exc.http_status
    try:
        body = error_body(exc.api_detail())
    except (TypeError, ValueError):
        log.exception("unserializable error detail")
        body = error_body(_REASONS.get(status, "error"))
    return status, body, exc.http_headers()


def create_app(core: ProvisionerCore, key: str, *, max_waiters: int = DEFAULT_MAX_WAITERS,
               closing: threading.Event | None = None, metrics: bool = True) -> bottle.Bottle:
    """The WSGI application for `core`, guarded by `key` (validated: raises ApiKeyError).

    `max_waiters`: how many blocking queries may wait at once; `closing`, once set, ends them early;
    `metrics`: serve GET /metrics and count requests (off: neither, and prometheus_client is not loaded).
    """
    if max_waiters < 1:
        raise ValueError("max_waiters must be at least 1")
    key_bytes = check_key(key)
    app = JsonBottle()
    app.uninstall(True)  # no JSON/template plugins: handlers return bytes
    # Handlers catch everything themselves. Whatever still escapes Bottle goes up to Waitress, which logs it
    # and answers with JsonErrorTask; Bottle's catch-all would answer with an HTML page instead.
    app.config["catchall"] = False
    routes = _Routes(core, max_waiters, closing or threading.Event())
    counts = None
    if metrics:
        from ozwald.api.metrics import exposition  # only now: prometheus_client costs ~1.4 MB of RSS

        counts = app.counts = RequestCounts()
        routes.exposition = exposition(core, counts, lambda: routes.waiting, max_waiters)
    for method, path, handler, needs_auth in route_table(routes):
        callback = _endpoint(handler, key_bytes if needs_auth else None, path, counts)
        for served in dict.fromkeys(twins(path)):
            app.route(bottle_rule(served), method, callback, name=None)
    return app
