# SPDX-License-Identifier: AGPL-3.0-or-later
"""Fixtures for the HTTP API tests: the real Waitress server on an ephemeral loopback port, in a thread,
in front of `FakeCore`, an in-memory test double of the provisioner core (not of HTTP)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from ozwald.api import AdmissionError, ApiServer, create_server
from ozwald.config.values import Name
from ozwald.provisioner.observe import StatusObserver
from ozwald.provisioner.wake import NotDesired, NotOnDemand
from ozwald.records import (
    ActiveService,
    DesiredInstance,
    DesiredSet,
    NudgeAccepted,
    PlanEntry,
    ServiceInfo,
    ServiceRequest,
    Status,
    UpdateError,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

API_KEY = "test-key-0123456789abcdef"


class _ProfileBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    service: Name | None = None
    variety: Name | None = None
    profile: Name | None = None
    request_id: str | None = None
    requested_at: datetime | None = None


class FakeCore:
    """An in-memory provisioner core: a desired set, a profiling queue and canned host resources.

    `raise_on[method] = exc` makes that method raise; `strict_services=False` accepts any service name
    (the schemathesis run sends arbitrary names and expects valid ones to be accepted).
    """

    def __init__(self, strict_services: bool = True) -> None:
        self.lock = threading.Lock()
        self.strict_services = strict_services
        self.services: dict[str, dict[str, set[str]]] = {
            "qwen1.5-vllm": {"varieties": {"nvidia", "amdgpu", "cpu-only"}, "profiles": {"no-gpu", "fast-gpu"}},
            "fiction-sources": {"varieties": set(), "profiles": set()},
        }
        self.desired = DesiredSet()
        self.update_calls: list[tuple[list[ServiceRequest], bool]] = []
        self.plan_calls: list[list[ServiceRequest]] = []
        self.profiles: list[dict[str, Any]] = []
        self.components = {"cache": "ok", "systemd": "ok"}
        self.raise_on: dict[str, BaseException] = {}
        self.changed = threading.Condition(self.lock)
        self.revision = 7_000_000_001  # +1 per update: the statuses here follow the desired set
        self.profile_revision = 9_000_000_001  # +1 per change of the queue or the results
        self.results: list[dict[str, Any]] = [
            {"service": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu", "spec_hash": "0123456789abcdef",
             "outcome": "measured", "started_at": "2026-12-02T16:00:00Z", "finished_at": "2026-12-02T16:00:20Z",
             "ready_s": 3.2, "ram_peak_mib": 312.5, "vram_peak_mib": {}, "samples": 40, "stale": False}]
        self.profile_waits = 0  # how many blocking queries of the queue have begun to wait
        self.on_demand_services = {"qwen1.5-vllm"}  # instances of these can be woken and put to sleep
        self.nudges: list[tuple[str, str]] = []  # (instance, wake|sleep) in the order they came
        self.status_of: dict[str, Status] = {}  # an instance's status, when not `starting`
        self.on_nudge: Any = None  # called with (instance, operation) after a nudge is recorded
        self.active_waits = 0  # how many blocking queries of the statuses have begun to wait

    def _maybe_raise(self, method: str) -> None:
        exc = self.raise_on.get(method)
        if exc is not None:
            raise exc

    def configured_services(self) -> list[dict[str, Any]]:
        self._maybe_raise("configured_services")
        return [
            {
                "name": "qwen1.5-vllm",
                "type": "container",
                "description": "DeepSeek Qwen 1.5B via vLLM",
                "image": None,
                "environment": {"MODEL_NAME": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"},
                "varieties": {"cpu-only": {"image": "openai-api-vllm.cpu-only", "environment": {"GPU": "false"}}},
                "profiles": {"no-gpu": {"environment": {"MAX_MODEL_LEN": "45000"}}},
            },
            {"name": "fiction-sources", "type": "source-files", "description": "Fiction sources",
             "environment": {"DIRECTORY": "sources/"}},
        ]

    def active_services(self) -> list[ActiveService]:
        self._maybe_raise("active_services")
        with self.lock:
            instances = self.desired.instances
        return [
            ActiveService(name=i.name, service=i.service, variety=i.variety, profile=i.profile,
                          status=self.status_of.get(i.name, "starting"),
                          info=ServiceInfo(unit=f"ozwald-{i.name}.service"))
            for i in instances
        ]

    def watch_active(self, after: int | None, wait: float) -> tuple[int, list[ActiveService]]:
        self._maybe_raise("watch_active")
        with self.changed:
            if after == self.revision and wait > 0:
                self.active_waits += 1
                self.changed.notify_all()
                self.changed.wait_for(lambda: self.revision != after, wait)
            revision = self.revision
        return revision, self.active_services()

    def _resolve(self, items: list[ServiceRequest]) -> tuple[DesiredInstance, ...]:
        out = []
        for index, item in enumerate(items):
            assert item.service is not None
            known = self.services.get(item.service)
            if self.strict_services:
                if known is None:
                    raise UpdateError(index, "service", f"unknown service {item.service!r}")
                if item.variety is not None and item.variety not in known["varieties"]:
                    raise UpdateError(index, "variety", f"unknown variety {item.variety!r}")
                if item.profile is not None and item.profile not in known["profiles"]:
                    raise UpdateError(index, "profile", f"unknown profile {item.profile!r}")
            out.append(DesiredInstance(name=item.name, service=item.service, variety=item.variety,
                                       profile=item.profile))
        return tuple(out)

    def update(self, items: list[ServiceRequest], force: bool = False) -> DesiredSet:
        self._maybe_raise("update")
        instances = self._resolve(items)
        with self.lock:
            self.update_calls.append((items, force))
            self.desired = DesiredSet(generation=self.desired.generation + 1, instances=instances,
                                      updated_at=datetime.now(UTC))
            self.revision += 1
            self.changed.notify_all()
            return self.desired

    def await_active_waits(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` blocking queries of the statuses have begun to wait."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.active_waits >= count, timeout)

    def set_status(self, name: str, status: Status) -> None:
        """Publish a new status of `name`, as the reconciler would: the revision moves, waiters wake."""
        with self.changed:
            self.status_of[name] = status
            self.revision += 1
            self.changed.notify_all()

    def wake(self, name: str) -> NudgeAccepted:
        return self._nudge(name, "wake")

    def sleep(self, name: str) -> NudgeAccepted:
        return self._nudge(name, "sleep")

    def _nudge(self, name: str, operation: str) -> NudgeAccepted:
        self._maybe_raise(operation)
        with self.lock:
            instance = self.desired.by_name().get(name)
            if instance is None:
                raise NotDesired(f"no instance {name!r} in the desired set")
            if instance.service not in self.on_demand_services:
                raise NotOnDemand(f"instance {name!r} is not on demand; set on_demand on its service")
            self.nudges.append((name, operation))
        if self.on_nudge is not None:
            self.on_nudge(name, operation)
        return NudgeAccepted(message=f"{operation} of {name} accepted")

    def plan(self, items: list[ServiceRequest]) -> list[PlanEntry]:
        self._maybe_raise("plan")
        instances = self._resolve(items)
        with self.lock:
            self.plan_calls.append(items)
            current = self.desired.by_name()
        swapping = [i.name for i in instances if i.service in self.on_demand_services]
        entries = [
            PlanEntry(name=i.name, action="keep" if current.get(i.name) == i else "start", reason="requested",
                      service=i.service, variety=i.variety, profile=i.profile,
                      # as if the on-demand ones did not fit together: each swaps with the others
                      fit={"exclusive_with": [n for n in swapping if n != i.name]}
                      if i.name in swapping and len(swapping) > 1 else None)
            for i in instances
        ]
        wanted = {i.name for i in instances}
        entries += [PlanEntry(name=name, action="stop", reason="not in the desired set", service=i.service)
                    for name, i in current.items() if name not in wanted]
        return entries

    def host_resources(self) -> dict[str, Any]:
        self._maybe_raise("host_resources")
        gpu = {"id": "nvidia:0", "total_vram": 24576, "available_vram": 20000, "description": "NVIDIA RTX 4090",
               "pci_device_description": "AD102", "vendor": "nvidia", "index": 0, "uuid": "GPU-1",
               "cdi_name": "nvidia.com/gpu=0", "cdi_uuid_name": "nvidia.com/gpu=GPU-1",
               "pci_bus_id": "0000:01:00.0", "utilization_percent": 3.0, "errors": []}
        return {"total_cpu_cores": 16, "available_cpu_cores": 12.5, "total_ram_gb": 62.5, "available_ram_gb": 40.1,
                "total_vram_gb": 24.0, "available_vram_gb": 19.53, "total_gpus": 1, "available_gpus": ["nvidia:0"],
                "gpus": [gpu], "cpu_load_percent": 21.0,
                "vendors": {"nvidia": {"available": True, "reason": None, "driver_version": "550.1"}}}

    def available_resources(self) -> list[dict[str, Any]]:
        self._maybe_raise("available_resources")
        return [
            {"name": "cpu", "type": "cpu", "unit": "cores", "value": 12.5, "related_resources": [],
             "extended_attributes": {"total": 16}},
            {"name": "memory", "type": "memory", "unit": "GB", "value": 40.1, "related_resources": [],
             "extended_attributes": {"total": 62.5}},
            {"name": "nvidia:0", "type": "gpu", "unit": "devices", "value": 1.0,
             "related_resources": ["vram:nvidia:0"], "extended_attributes": {"vendor": "nvidia"}},
            {"name": "vram:nvidia:0", "type": "vram", "unit": "MiB", "value": 20000,
             "related_resources": ["nvidia:0"], "extended_attributes": {"total": 24576}},
        ]

    def profile_requests(self) -> list[dict[str, Any]]:
        self._maybe_raise("profile_requests")
        with self.lock:
            return list(self.profiles)

    def watch_profile(self, after: int | None, wait: float) -> tuple[int, list[dict[str, Any]]]:
        self._maybe_raise("profile_requests")
        with self.changed:
            if after == self.profile_revision and wait > 0:
                self.profile_waits += 1
                self.changed.notify_all()
                self.changed.wait_for(lambda: self.profile_revision != after, wait)
            return self.profile_revision, list(self.profiles)

    def await_profile_waits(self, count: int, timeout: float = 10.0) -> None:
        """Block until `count` blocking queries of the queue have begun to wait (a test's profiler runs on it)."""
        with self.changed:
            assert self.changed.wait_for(lambda: self.profile_waits >= count, timeout)

    def profile_changed(self, change: Any) -> None:
        """Apply `change()` to the queue or the results under the lock, then wake the blocking queries."""
        with self.changed:
            change()
            self.profile_revision += 1
            self.changed.notify_all()

    def profile_results(self) -> list[dict[str, Any]]:
        self._maybe_raise("profile_results")
        with self.lock:
            return list(self.results)

    def enqueue_profile(self, body: Any) -> dict[str, Any]:
        self._maybe_raise("enqueue_profile")
        if not isinstance(body, dict):
            raise UpdateError(None, "body", "a profiling request is a JSON object")
        try:
            request = _ProfileBody.model_validate(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UpdateError(None, ".".join(str(p) for p in error["loc"]), error["msg"]) from None
        with self.lock:
            if self.desired.instances and body.get("service") == "busy":
                raise AdmissionError("profiling requires an unloaded system")
            request_id = request.request_id or f"req-{len(self.profiles) + 1}"
            self.profiles.append({**body, "request_id": request_id})
            self.profile_revision += 1
            self.changed.notify_all()
        return {"status": "accepted", "request_id": request_id}

    def health(self) -> dict[str, str]:
        self._maybe_raise("health")
        return dict(self.components)

    def metrics(self) -> Iterable[Metric]:
        """The real families, of the statuses above (the families are what tests/provisioner checks)."""
        from ozwald.provisioner.metrics import ScrapeInputs, families  # as the provisioner: only when scraped

        self._maybe_raise("metrics")
        observer = StatusObserver()
        statuses = self.active_services()
        observer.observe(statuses)
        return families(ScrapeInputs(statuses=statuses, observed=observer.snapshot(),
                                     desired_generation=self.desired.generation))


class SwitchableCore:
    """The core the shared server talks to; each test swaps in a fresh FakeCore."""

    def __init__(self) -> None:
        self.current = FakeCore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Api:
    """A bare HTTP client for the tests: one request per connection, never follows redirects."""

    def __init__(self, server: ApiServer, key: str = API_KEY) -> None:
        self.host, self.port, self.key = server.host, server.port, key

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = "default",
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:
        sent = dict(headers or {})
        if token == "default":
            token = self.key
        if token is not None and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {token}"
        data = raw
        if data is None and body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw_headers = response.getheaders()
            return Reply(response.status, {k.lower(): v for k, v in raw_headers}, response.read(), raw_headers)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def raw(self, payload: bytes) -> bytes:
        """Send raw bytes on a fresh connection and return everything the server answers."""
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture(scope="session")
def switch() -> SwitchableCore:
    return SwitchableCore()


@pytest.fixture(scope="session")
def server(switch: SwitchableCore) -> Iterator[ApiServer]:
    api_server = create_server(switch, API_KEY, host="127.0.0.1", port=0)
    api_server.start()
    yield api_server
    api_server.close()


@pytest.fixture
def core(switch: SwitchableCore) -> FakeCore:
    switch.current = FakeCore()
    return switch.current


@pytest.fixture
def api(server: ApiServer, core: FakeCore) -> Api:
    return Api(server)


# (method, documented path, a valid body or None) for every endpoint of the contract
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/health", None),
    ("GET", "/srv/services/configured/", None),
    ("GET", "/srv/services/active/", None),
    ("POST", "/srv/services/active/update/", [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}]),
    ("POST", "/srv/services/active/plan/", [{"name": "qwen1.5-vllm", "variety": "cpu-only", "profile": "no-gpu"}]),
    ("POST", "/srv/services/active/{name}/wake", None),
    ("POST", "/srv/services/active/{name}/sleep", None),
    ("GET", "/srv/resources/available/", None),
    ("GET", "/srv/host/resources", None),
    ("GET", "/srv/services/profile", None),
    ("POST", "/srv/services/profile", {"service": "qwen1.5-vllm", "variety": "cpu-only"}),
    ("GET", "/srv/services/profile/results", None),
    ("GET", "/metrics", None),
]
PROTECTED = [endpoint for endpoint in ENDPOINTS if endpoint[1] != "/health"]


ON_DEMAND = {"name": "chat", "service": "qwen1.5-vllm", "variety": "cpu-only"}  # an instance FakeCore can nudge


def concrete(api: Api, path: str) -> str:
    """A documented path to request: `{name}` is an on-demand instance, made desired first."""
    if "{name}" not in path:
        return path
    assert api.post("/srv/services/active/update/", [ON_DEMAND]).status == 202
    return path.replace("{name}", ON_DEMAND["name"])


def twin(path: str) -> str:
    return path.rstrip("/") if path.endswith("/") else path + "/"
