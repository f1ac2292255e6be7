# SPDX-License-Identifier: Apache-2.0
"""A small typed client for Ozwald's HTTP API, on the standard library only.

    client = OzwaldClient("http://127.0.0.1:8000", key=os.environ["OZWALD_SYSTEM_KEY"])
    client.update([{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}])
    for service in client.active_services():
        print(service.name, service.status)
    client.wait_for(lambda services: all(s.status == "available" for s in services), timeout=300)
    client.wake("chat", wait=120)  # an on-demand instance: its container starts now, not at the first request

Errors answered by the API raise OzwaldAPIError(status, detail); a server that cannot be reached
raises OzwaldConnectionError. The client never follows redirects and ignores proxy settings, so the
key is only ever sent to `base_url`; it never appears in a message or a repr.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, cast

from pydantic import BaseModel, TypeAdapter

from ozwald.errors import Exit, OzwaldError
from ozwald.records import ActiveService, NudgeAccepted, NudgeOperation, NudgeWait, PlanEntry, ServiceRequest
from ozwald.resources.views import AvailableResource, HostResources

__all__ = [
    "ConfiguredService",
    "HealthStatus",
    "NudgeAccepted",
    "OzwaldAPIError",
    "OzwaldClient",
    "OzwaldClientError",
    "OzwaldConnectionError",
    "OzwaldTimeout",
    "ProfileAccepted",
    "ProfileQueueEntry",
    "ProfileResultRecord",
    "UpdateAccepted",
]

_ACTIVE_LIST: TypeAdapter[list[ActiveService]] = TypeAdapter(list[ActiveService])
_PLAN_LIST: TypeAdapter[list[PlanEntry]] = TypeAdapter(list[PlanEntry])

ServiceItem = ServiceRequest | Mapping[str, Any]
MAX_WAIT_S = 60.0  # the server's limit on one blocking query
NUDGE_WAIT_S = MAX_WAIT_S  # how long one wake or sleep request waits; a longer wait follows the statuses


class UpdateAccepted(TypedDict):
    """The answer to an accepted update."""

    status: str
    message: str
    generation: int


class HealthStatus(TypedDict, total=False):
    """`{"status": "healthy"}`, or `{"status": "unhealthy", "components": {name: reason}}`."""

    status: str
    components: dict[str, str]


class ConfiguredService(TypedDict, total=False):
    """A service definition of the settings (secrets masked); more keys may appear."""

    name: str
    type: str
    description: str | None
    image: str | None
    environment: dict[str, Any] | None
    varieties: dict[str, Any] | None
    profiles: dict[str, Any] | None


class ProfileQueueEntry(TypedDict, total=False):
    """An item of the profiling queue (GET /srv/services/profile)."""

    service: str
    variety: str | None
    profile: str | None
    request_id: str
    requested_at: str
    item_id: str
    request_items: int
    state: str
    attempts: int
    preempted: int
    position: int
    progress: dict[str, Any]


class ProfileAccepted(TypedDict, total=False):
    """The answer to a queued profiling request."""

    status: str
    request_id: str
    items: list[dict[str, Any]]


class ProfileResultRecord(TypedDict, total=False):
    """A profiling result (GET /srv/services/profile/results)."""

    service: str
    variety: str | None
    profile: str | None
    spec_hash: str
    outcome: str
    reason: str | None
    request_id: str | None
    item_id: str | None
    started_at: str
    finished_at: str
    ready_s: float | None
    ready_by: str | None
    ram_peak_mib: float | None
    ram_steady_mib: float | None
    ram_method: str | None
    cpu_seconds_to_ready: float | None
    cpu_cores_steady: float | None
    cpu_cores_peak: float | None
    vram_peak_mib: dict[str, float]
    vram_method: str | None
    held_s: float | None
    samples: int
    stale: bool


class OzwaldClientError(OzwaldError):
    """Base class of the client's errors."""

    exit_status = Exit.FAILED


class OzwaldAPIError(OzwaldClientError):
    """The API answered with an error status; `detail` is the body's `detail` (or its text).

    On the command line: a 503 (Ozwald's Redis or systemd cannot be reached) exits 3, another 4xx (a
    request the API refused, a full queue) 2, a 5xx 1."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        self.status = self.http_status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.exit_status = (Exit.UNREACHABLE if status == 503 else Exit.USAGE if 400 <= status < 500
                            else Exit.FAILED)
        super().__init__(f"HTTP {status}: {detail}")

    def cli_lines(self) -> list[str]:
        detail = self.detail if isinstance(self.detail, str) else json.dumps(self.detail)
        return [f"the API answered {self.status}: {detail}"]

    def api_detail(self) -> Any:
        return self.detail

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": self.headers["retry-after"]} if "retry-after" in self.headers else {}


class OzwaldConnectionError(OzwaldClientError):
    """The API could not be reached, or its answer could not be read."""

    exit_status = Exit.UNREACHABLE
    http_status = 503

    def cli_lines(self) -> list[str]:
        return [f"{self} (is the provisioner, ozwald.service, running? `ozwald status`)"]


class OzwaldTimeout(OzwaldClientError, TimeoutError):
    """A wait did not see its condition before its deadline."""

    exit_status = Exit.TIMEOUT
    http_status = 504


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it could carry the Authorization header elsewhere."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


class OzwaldClient:
    """One provisioner's API. Thread-safe: every call opens its own connection."""

    def __init__(self, base_url: str, key: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not key:
            raise ValueError("key is required (the provisioner's OZWALD_SYSTEM_KEY)")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._authorization = f"Bearer {key}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def __repr__(self) -> str:
        return f"OzwaldClient({self.base_url!r}, timeout={self.timeout})"

    # -- endpoints ---------------------------------------------------------------------------------

    def health(self) -> HealthStatus:
        """GET /health (no auth). Answers the body for 200 and for 503 (unhealthy) alike."""
        return cast(HealthStatus, self._request("GET", "/health", auth=False, accept=(200, 503)))

    def configured_services(self) -> list[ConfiguredService]:
        """GET /srv/services/configured/."""
        return cast(list[ConfiguredService], self._request("GET", "/srv/services/configured/"))

    def active_services(self) -> list[ActiveService]:
        """GET /srv/services/active/."""
        return _ACTIVE_LIST.validate_python(self._request("GET", "/srv/services/active/"))

    def watch_active(self, after: int | None = None, wait: float = 30.0, deadline: float | None = None
                     ) -> tuple[int, list[ActiveService]]:
        """GET /srv/services/active/?after=&wait=: (revision, statuses). With `after`, the server answers
        when the statuses differ from that revision, or after `wait` seconds; pass the returned revision
        to the next call. Too many waiters already (429): the call retries after the server's Retry-After,
        but never past `deadline` (a `time.monotonic()` value): then it raises OzwaldTimeout."""
        revision, body = self._watch("/srv/services/active/", after, wait, deadline)
        return revision, _ACTIVE_LIST.validate_python(body)

    def watch_profile(self, after: int | None = None, wait: float = 30.0, deadline: float | None = None
                      ) -> tuple[int, list[ProfileQueueEntry]]:
        """GET /srv/services/profile?after=&wait=: (revision, the profiling queue), a blocking query like
        `watch_active`. The revision changes with the queue and with the results: an item leaves the queue
        once its result is recorded."""
        revision, body = self._watch("/srv/services/profile", after, wait, deadline)
        return revision, cast(list[ProfileQueueEntry], body)

    def _watch(self, path: str, after: int | None, wait: float, deadline: float | None) -> tuple[int, Any]:
        if after is not None:
            path += f"?after={int(after)}&wait={wait:g}"
        while True:
            try:
                body, headers = self._exchange("GET", path, timeout=max(self.timeout, wait + self.timeout))
            except OzwaldAPIError as exc:
                if exc.status != 429:
                    raise
                pause = _retry_after(exc.headers)
                if deadline is not None and time.monotonic() + pause >= deadline:
                    raise OzwaldTimeout(f"GET {path}: the server had too many waiters until the deadline") from None
                time.sleep(pause)
                continue
            return int(headers.get("x-ozwald-revision", "0")), body

    def wait_for(self, check: Callable[[list[ActiveService]], bool], timeout: float) -> list[ActiveService]:
        """The statuses once `check` holds for them, waiting on changes rather than polling.

        Raises TimeoutError after `timeout` seconds. Check for `failed` too, or a failed start waits to
        the end: `lambda ss: all(s.status in ("available", "failed") for s in ss)` (and `idle` for an on-demand
        instance, which waits for its first connection without running).
        """
        deadline = time.monotonic() + timeout
        try:
            revision, services = self.watch_active(deadline=deadline)
        except OzwaldTimeout:
            raise OzwaldTimeout(f"the statuses did not reach the condition within {timeout:g} s") from None
        while not check(services):
            left = deadline - time.monotonic()
            if left <= 0:
                raise OzwaldTimeout(f"the statuses did not reach the condition within {timeout:g} s")
            try:
                revision, services = self.watch_active(revision, wait=min(left, MAX_WAIT_S), deadline=deadline)
            except OzwaldTimeout:
                raise OzwaldTimeout(f"the statuses did not reach the condition within {timeout:g} s") from None
        return services

    def update(self, items: Sequence[ServiceItem], force: bool = False) -> UpdateAccepted:
        """POST /srv/services/active/update/: replace the desired set (all or nothing)."""
        path = "/srv/services/active/update/" + ("?force=true" if force else "")
        return cast(UpdateAccepted, self._request("POST", path, body=_items(items)))

    def wake(self, name: str, wait: float | None = None) -> NudgeAccepted:
        """POST /srv/services/active/<name>/wake: start the container of a desired on-demand instance now (it
        idles out after `idle_stop` like after a connection). With `wait` (seconds, any length): return once
        it is `available` or failed, or when `wait` runs out; `settled` says which, `instance` how it stands.
        Not desired: OzwaldAPIError 404; not on demand: 409."""
        return self._nudge(name, "wake", wait)

    def sleep(self, name: str, wait: float | None = None) -> NudgeAccepted:
        """POST /srv/services/active/<name>/sleep: stop the container of a desired on-demand instance now; its
        socket keeps listening. `wait` as for `wake`, until it is `idle` or failed."""
        return self._nudge(name, "sleep", wait)

    def _nudge(self, name: str, operation: NudgeOperation, wait: float | None) -> NudgeAccepted:
        path = f"/srv/services/active/{urllib.parse.quote(name, safe='')}/{operation}"
        if wait is None:
            return NudgeAccepted.model_validate(self._request("POST", path))
        deadline = time.monotonic() + max(0.0, wait)
        first = min(max(0.0, wait), NUDGE_WAIT_S)
        while True:
            try:
                body, headers = self._exchange("POST", f"{path}?wait={first:g}", timeout=self.timeout + first)
                break
            except OzwaldAPIError as exc:  # too many waiters: nothing was done yet, so asking again is safe
                pause = _retry_after(exc.headers)
                if exc.status != 429 or time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
        answer = NudgeAccepted.model_validate(body)
        if answer.settled or time.monotonic() >= deadline:
            return answer
        # Longer than one request may wait: follow the statuses from the revision the answer was read at.
        tracker = NudgeWait(name, operation)
        if answer.instance is not None and answer.instance.status == "failed":  # the failure from before
            tracker = NudgeWait.before(name, operation, [answer.instance])
        revision = int(headers.get("x-ozwald-revision", "0"))
        instance, over = answer.instance, False
        while not over:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                revision, services = self.watch_active(revision, wait=min(left, MAX_WAIT_S), deadline=deadline)
            except OzwaldTimeout:
                break
            instance, over = tracker.see(services)
        return answer.model_copy(update={"instance": instance, "settled": over})

    def plan(self, items: Sequence[ServiceItem]) -> list[PlanEntry]:
        """POST /srv/services/active/plan/: what an update with `items` would do; applies nothing."""
        return _PLAN_LIST.validate_python(self._request("POST", "/srv/services/active/plan/", body=_items(items)))

    def host_resources(self) -> HostResources:
        """GET /srv/host/resources."""
        return cast(HostResources, self._request("GET", "/srv/host/resources"))

    def available_resources(self) -> list[AvailableResource]:
        """GET /srv/resources/available/."""
        return cast(list[AvailableResource], self._request("GET", "/srv/resources/available/"))

    def profile_requests(self) -> list[ProfileQueueEntry]:
        """GET /srv/services/profile: the pending and running profiling items, with position, state, progress."""
        return cast(list[ProfileQueueEntry], self._request("GET", "/srv/services/profile"))

    def profile_results(self) -> list[ProfileResultRecord]:
        """GET /srv/services/profile/results: profiling results, newest first, each with `stale`."""
        return cast(list[ProfileResultRecord], self._request("GET", "/srv/services/profile/results"))

    def enqueue_profile(self, request: Mapping[str, Any] | BaseModel) -> ProfileAccepted:
        """POST /srv/services/profile: queue a profiling request: `{service, variety?, profile?}`,
        `{"services": [{name, variety?, profile?}, ...]}` or `{"all": True}`."""
        body = request.model_dump(mode="json", exclude_none=True) if isinstance(request, BaseModel) else dict(request)
        return cast(ProfileAccepted, self._request("POST", "/srv/services/profile", body=body))

    # -- transport ---------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: Any = None, auth: bool = True, accept: tuple[int, ...] = ()
    ) -> Any:
        return self._exchange(method, path, body, auth, accept)[0]

    def _exchange(
        self, method: str, path: str, body: Any = None, auth: bool = True, accept: tuple[int, ...] = (),
        timeout: float | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """The parsed JSON answer and its headers (names in lower case)."""
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._authorization
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        url = self.base_url + path  # the scheme is checked in __init__: http or https only
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                status, raw = int(response.status), response.read()
                answered = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = int(exc.code), exc.read()
                answered = {k.lower(): v for k, v in exc.headers.items()}
            if status not in accept:
                raise OzwaldAPIError(status, _detail(raw), answered) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OzwaldConnectionError(f"cannot reach {self.base_url}: {reason}") from None
        if not 200 <= status < 300 and status not in accept:
            raise OzwaldAPIError(status, _detail(raw), answered)
        try:
            return json.loads(raw), answered
        except ValueError:
            raise OzwaldConnectionError(f"{method} {path}: the answer is not JSON") from None


def _retry_after(headers: Mapping[str, str]) -> float:
    try:
        return min(max(float(headers.get("retry-after", "1")), 0.1), MAX_WAIT_S)
    except ValueError:
        return 1.0


def _items(items: Sequence[ServiceItem]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, ServiceRequest):
            out.append(item.model_dump(mode="json", include={"name", "service", "variety", "profile"},
                                       exclude_none=True))
        else:
            out.append(dict(item))
    return out


def _detail(raw: bytes) -> Any:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    return body
