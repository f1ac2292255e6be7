# SPDX-License-Identifier: Apache-2.0
"""The records the provisioner, its store, its API and its clients share, and the errors the API maps.

A leaf module (it imports only `ozwald.config.values`), so the state store, the provisioner, the API and
the client can all use it without importing each other. Field names follow the contract's
ServiceInformation, so existing orchestrators keep working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from ozwald.config.values import Name
from ozwald.errors import Exit, OzwaldError

Status = Literal["starting", "available", "idle", "stopping", "failed"]


class ServiceRequest(BaseModel):
    """One item of POST /srv/services/active/update/: an instance the orchestrator wants running.

    `service` defaults to `name`, so `{"name": "qwen1.5-vllm", "variety": "cpu-only"}` works as the
    contract documents. Fields of a ServiceInformation that an orchestrator echoes back (`status`,
    `properties`, `info`) are accepted and ignored; any other field is an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    service: Name | None = None
    variety: Name | None = None
    profile: Name | None = None
    status: Any = None
    properties: Any = None
    info: Any = None

    @model_validator(mode="after")
    def _default_service(self) -> ServiceRequest:
        if self.service is None:
            object.__setattr__(self, "service", self.name)
        return self


class DesiredInstance(BaseModel):
    """A validated, resolved request: the variety is always chosen (auto-selection included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    service: Name
    variety: str | None = None
    profile: str | None = None
    variety_auto: bool = False  # True when Ozwald picked the variety for this host
    devices: tuple[str, ...] | None = None  # a GPU pin chosen at admission (by UUID); None: the spec's devices
    # On-demand instances this one swaps with (they do not fit together on its GPUs), chosen at admission
    exclusive_with: tuple[str, ...] = ()
    # Run by the profiling queue: an on-demand service runs like any other (its container at once, no socket)
    profiled: bool = False


class DesiredSet(BaseModel):
    """The whole desired set; `generation` grows with every accepted update (a retried write may skip one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int = 0
    instances: tuple[DesiredInstance, ...] = ()
    updated_at: datetime | None = None

    def by_name(self) -> dict[str, DesiredInstance]:
        return {instance.name: instance for instance in self.instances}


class _Details(BaseModel):
    """A record of details whose keys appear only when set, as the contract's `info` dict always had them.

    A key given (even as null) is answered; one never given is left out, so the wire format is that of
    the dict it replaces. It reads like that dict too (`info.get("reason")`, `info["unit"]`, `"pending" in
    info`, `info == {...}`), so code written against the dict keeps working. Keys not declared are kept
    (`extra="allow"`): the contract promises a dict of details, and a newer provisioner may add some.
    """

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        given = self.model_fields_set
        return {key: value for key, value in dumped.items() if key in given or key not in type(self).model_fields}

    def _keys(self) -> list[str]:
        return [key for key in type(self).model_fields if key in self.model_fields_set] + list(
            self.__pydantic_extra__ or {})

    def __contains__(self, key: object) -> bool:
        return key in self._keys()

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._keys() else default

    def keys(self) -> list[str]:
        return self._keys()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Details):
            return self.model_dump() == other.model_dump()
        if isinstance(other, Mapping):
            return self.model_dump() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dict it replaces


class PendingChange(_Details):
    """`info.pending`: the spec a change under way moves the instance to, and systemd's job doing it."""

    variety: str | None = None
    profile: str | None = None
    spec_hash: str | None = None
    job: str | None = None  # start, restart, stop: the job queued for the unit, if any


class OnDemandInfo(_Details):
    """`info.on_demand` of an on-demand instance: the socket that serves it while no container runs."""

    socket: str  # the socket unit
    socket_state: str | None = None  # its ActiveState/SubState, e.g. active/listening, active/running
    listen: str  # the address the socket listens on (systemd's ListenStream=)
    idle_stop: float  # seconds without a connection before the container stops
    exclusive_with: list[str] = Field(default_factory=list)  # instances that cannot run beside it on its GPUs


class ServiceInfo(_Details):
    """`info` of an instance: what systemd and Podman say of it (README, "Statuses tell what runs")."""

    # In the order the provisioner sets them, which is the order the keys are answered in.
    unit: str | None = None  # the systemd unit; null for a resource (nothing runs)
    generation: int | None = None  # of the desired set this status was computed for
    spec_hash: str | None = None  # of the spec desired now
    variety_chosen: str | None = None  # when the variety was picked for this host
    active_state: str | None = None  # systemd's ActiveState, SubState
    sub_state: str | None = None
    since: str | None = None  # ISO 8601: when the unit entered its state
    restarts: int | None = None  # systemd's NRestarts
    running_spec_hash: str | None = None  # of the spec the running container was started from; null: none or unknown
    pending: PendingChange | None = None  # while a change is under way
    restarting: bool | None = None  # true while systemd restarts the unit after a crash
    reason: str | None = None  # why it failed or restarts; what a resource is
    container_id: str | None = None  # when available: Podman's container id (null until asked)
    invocation: str | None = None  # when available: systemd's invocation id of this run
    result: str | None = None  # when failed: systemd's Result
    exit_status: int | None = None  # when failed: the main process's exit status
    on_demand: OnDemandInfo | None = None  # for an on-demand instance


class ActiveService(BaseModel):
    """What GET /srv/services/active/ answers per instance (the contract's ServiceInformation)."""

    name: str
    service: str
    variety: str | None = None
    profile: str | None = None
    status: Status
    properties: dict[str, Any] = Field(default_factory=dict)
    info: ServiceInfo = Field(default_factory=ServiceInfo)


class UpdateError(OzwaldError):
    """A request item is invalid; `index` and `field` say which item and which field to fix."""

    exit_status = Exit.USAGE
    http_status = 400

    def __init__(self, index: int | None, field: str, message: str) -> None:
        self.index = index
        self.field = field
        self.message = message
        where = f"item {index}: " if index is not None else ""
        super().__init__(f"{where}{field}: {message}")

    def detail(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}

    def api_detail(self) -> dict[str, Any]:
        return self.detail()


class AdmissionError(OzwaldError):
    """A valid request that cannot be admitted now (not enough resources, system not unloaded, ...).

    `detail` is JSON-ready: a message, or a mapping that says which item and resource are at fault.
    """

    exit_status = Exit.USAGE
    http_status = 409

    def __init__(self, detail: Any) -> None:
        self.detail = detail
        super().__init__(detail if isinstance(detail, str) else "request not admitted")

    def api_detail(self) -> Any:
        return self.detail


class CoreUnavailable(OzwaldError):
    """A dependency of the core (the cache, the service manager) cannot be reached right now."""

    exit_status = Exit.UNREACHABLE
    http_status = 503

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def check_unique_names(items: Sequence[_Named]) -> None:
    """Instance names are unique within a desired set: UpdateError at the first repeat, naming both items."""
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.name in first_index:
            also = first_index[item.name]
            raise UpdateError(index, "name", f"duplicate instance name {item.name!r} (also item {also})")
        first_index[item.name] = index


PlanAction = Literal["start", "stop", "restart", "keep"]
# Why the plan chose its action, as a value the reconciler decides on (the `reason` is for people).
PlanCause = Literal["new", "changed", "stale", "ended", "unchanged", "removed", "held", "resource"]


class PlanEntry(BaseModel):
    """One line of a plan: what will happen to an instance, and why; `fit` shows its GPUs' VRAM."""

    name: str
    action: PlanAction
    reason: str
    service: str | None = None
    variety: str | None = None
    profile: str | None = None
    fit: dict[str, Any] | None = None
    cause: PlanCause = Field(default="unchanged", exclude=True)


# Waking and sleeping an on-demand instance on purpose ----------------------------------------------------
NudgeOperation = Literal["wake", "sleep"]
# The status a wake or a sleep ends in; `failed` ends either.
NUDGE_TARGETS: dict[str, Status] = {"wake": "available", "sleep": "idle"}


class NudgeAccepted(BaseModel):
    """What POST /srv/services/active/<name>/wake and .../sleep answer. With `?wait=`, also the instance's
    status when the wait ended, and whether it had settled: reached the operation's target, or failed."""

    status: Literal["accepted"] = "accepted"
    message: str
    instance: ActiveService | None = None
    settled: bool | None = None


@dataclass
class NudgeWait:
    """When a wait on a wake or a sleep is over, read from the statuses published after the nudge.

    The wait ends when the instance shows the operation's target status, or `failed`. A `failed` the instance
    already had when it was nudged is the old failure, not the outcome: it counts once the instance has left
    it, or fails anew (another `since` or invocation: the statuses a blocking query misses between two reads
    may include the `starting` in between). An instance absent from the statuses (just desired, not yet
    reconciled) is waited for."""

    name: str
    operation: NudgeOperation
    stale: tuple[str | None, str | None] | None = None  # (since, invocation) of the failure before the nudge

    @classmethod
    def before(cls, name: str, operation: NudgeOperation, services: Sequence[ActiveService]) -> NudgeWait:
        """The wait for a nudge about to be sent, from the statuses published before it."""
        current = next((s for s in services if s.name == name), None)
        failed = current is not None and current.status == "failed"
        return cls(name, operation, stale=_failure(current) if failed and current is not None else None)

    def see(self, services: Sequence[ActiveService]) -> tuple[ActiveService | None, bool]:
        """The instance's status in `services`, and whether the wait is over with it."""
        current = next((s for s in services if s.name == self.name), None)
        if current is None:
            return None, False
        if current.status != "failed":
            self.stale = None
            return current, current.status == NUDGE_TARGETS[self.operation]
        if self.stale is not None and _failure(current) != self.stale:
            self.stale = None
        return current, self.stale is None


def _failure(service: ActiveService) -> tuple[str | None, str | None]:
    return service.info.since, service.info.invocation
