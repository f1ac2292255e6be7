# SPDX-License-Identifier: Apache-2.0
"""Every provisioner of a settings file at once: one view of what runs where, and advice on placement.

    fleet = Fleet.from_settings(load_settings("ozwald.yml"), key=os.environ["OZWALD_SYSTEM_KEY"])
    for member in fleet.status():           # every provisioner asked in parallel, each with its timeout
        print(member.provisioner, member.reachable, [s.name for s in member.services])
    for candidate in fleet.place("qwen1.5-vllm", "nvidia", "fast-gpu"):
        print(candidate.provisioner, candidate.fits, candidate.headroom_vram_mib, candidate.reasons)

A provisioner that does not answer is reported unreachable, never an exception: one dead host must not
hide the others. `place` only advises: it asks each provisioner's plan endpoint (which applies nothing)
whether the instance would fit next to what that provisioner runs now, and orders the candidates by the
room they would have left; it never starts or moves anything.

Settings are read by attribute (`hosts[].name/ip`, `provisioners[].name/host/api.port`), so this module
needs only the client; `ozwald.config.load_settings` gives such an object.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ozwald.client import OzwaldAPIError, OzwaldClient, OzwaldClientError
from ozwald.records import ActiveService, PlanEntry

__all__ = ["Candidate", "Fleet", "Member", "MemberStatus"]

DEFAULT_TIMEOUT_S = 5.0
T = TypeVar("T")


class _Host(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def ip(self) -> Any: ...


class _Api(Protocol):
    @property
    def port(self) -> int: ...


class _Provisioner(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def api(self) -> _Api: ...


class SettingsLike(Protocol):
    @property
    def hosts(self) -> Sequence[_Host]: ...
    @property
    def provisioners(self) -> Sequence[_Provisioner]: ...


@dataclass(frozen=True)
class Member:
    """One provisioner of the fleet and where its API answers."""

    provisioner: str
    host: str
    url: str


@dataclass(frozen=True)
class MemberStatus:
    """What one provisioner answered: its instances and its GPUs (MiB), or why it could not be asked."""

    provisioner: str
    host: str
    url: str
    reachable: bool
    error: str | None = None
    services: tuple[ActiveService, ...] = ()
    gpus: tuple[Mapping[str, Any], ...] = ()  # /srv/host/resources `gpus`: id, total_vram, available_vram
    gpu_error: str | None = None  # the host resources could not be read (the statuses could)
    seconds: float = 0.0

    @property
    def gpu_memory_mib(self) -> tuple[int, int] | None:
        """(used, total) MiB over the host's GPUs: total less what the provisioner reports available."""
        if not self.gpus:
            return None
        total = sum(int(g.get("total_vram") or 0) for g in self.gpus)
        available = sum(int(g.get("available_vram") or 0) for g in self.gpus)
        return total - available, total

    def as_json(self) -> dict[str, Any]:
        memory = self.gpu_memory_mib
        return {"provisioner": self.provisioner, "host": self.host, "url": self.url, "reachable": self.reachable,
                "error": self.error, "seconds": round(self.seconds, 4),
                "services": [s.model_dump(mode="json") for s in self.services],
                "gpus": [{"id": g.get("id"), "used_mib": int(g.get("total_vram") or 0) - int(g.get("available_vram")
                                                                                           or 0),
                          "total_mib": int(g.get("total_vram") or 0)} for g in self.gpus],
                "gpu_memory_mib": {"used": memory[0], "total": memory[1]} if memory else None,
                "gpu_error": self.gpu_error}


@dataclass(frozen=True)
class Candidate:
    """One provisioner's answer to `place`: whether the instance fits there, the room left, and why not."""

    provisioner: str
    host: str
    fits: bool
    reasons: tuple[str, ...] = ()
    headroom_vram_mib: int | None = None  # the least VRAM left on the GPUs it would get (declared needs)
    headroom_ram_gb: float | None = None  # RAM the host reports available
    instance: str | None = None  # the name the plan was asked for
    entry: PlanEntry | None = None  # the plan's line for it, with `fit`
    seconds: float = 0.0

    def sort_key(self) -> tuple[bool, float, float]:
        return (not self.fits, -(self.headroom_vram_mib if self.headroom_vram_mib is not None else 0),
                -(self.headroom_ram_gb if self.headroom_ram_gb is not None else 0))


@dataclass
class Fleet:
    """The provisioners of one settings file. `key` is every provisioner's API token unless `keys` names
    one for a provisioner; `timeout` bounds each provisioner's answer."""

    members: Sequence[Member]
    key: str
    timeout: float = DEFAULT_TIMEOUT_S
    keys: Mapping[str, str] = field(default_factory=dict)
    # Kept between calls: starting the threads again costs more than a provisioner's answer on a busy host.
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)
    _clients: dict[str, OzwaldClient] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads (they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _run(self, calls: Sequence[Callable[[], T]]) -> list[tuple[T | BaseException, float]]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, 2 * len(self.members)),
                                            thread_name_prefix="ozwald-fleet")
        return _parallel(self._pool, calls)

    @classmethod
    def from_settings(cls, settings: SettingsLike, key: str, timeout: float = DEFAULT_TIMEOUT_S,
                      keys: Mapping[str, str] | None = None) -> Fleet:
        """Each provisioner at `http://<its host's ip>:<its api.port>`."""
        ips = {host.name: host.ip for host in settings.hosts}
        members = []
        for provisioner in settings.provisioners:
            ip = ips.get(provisioner.host)
            if ip is None:
                raise ValueError(f"provisioner {provisioner.name!r}: host {provisioner.host!r} is not in hosts")
            members.append(Member(provisioner.name, provisioner.host, _url(ip, provisioner.api.port)))
        return cls(members, key, timeout, dict(keys or {}))

    def client(self, member: Member) -> OzwaldClient:
        """The member's client (thread-safe; made once: building one costs about as much as a request)."""
        client = self._clients.get(member.provisioner)
        if client is None:
            client = OzwaldClient(member.url, self.keys.get(member.provisioner, self.key), timeout=self.timeout)
            self._clients[member.provisioner] = client
        return client

    # -- the view ---------------------------------------------------------------------------------------

    def status(self) -> list[MemberStatus]:
        """Every provisioner's instances and GPUs, asked all at once; in the settings' order."""
        calls: list[Callable[[], Any]] = []
        for member in self.members:
            client = self.client(member)
            calls += [client.active_services, client.host_resources]
        answers = self._run(calls)
        out = []
        for index, member in enumerate(self.members):
            (active, active_s), (resources, resources_s) = answers[2 * index], answers[2 * index + 1]
            seconds = max(active_s, resources_s)
            if isinstance(active, BaseException):
                out.append(MemberStatus(member.provisioner, member.host, member.url, False, _why(active),
                                        seconds=seconds))
                continue
            gpus: tuple[Mapping[str, Any], ...] = ()
            gpu_error = None
            if isinstance(resources, BaseException):
                gpu_error = _why(resources)
            else:
                gpus = tuple(resources.get("gpus") or ())
            out.append(MemberStatus(member.provisioner, member.host, member.url, True, None, tuple(active), gpus,
                                    gpu_error, seconds))
        return out

    # -- advice -----------------------------------------------------------------------------------------

    def place(self, service: str, variety: str | None = None, profile: str | None = None,
              name: str | None = None) -> list[Candidate]:
        """Where an instance of `service` would fit: each provisioner's plan for what it runs now plus the
        instance, asked in parallel. The candidates that fit come first, the most room left first (VRAM on
        the GPUs it would get, then available RAM); then those that do not, each with its reasons."""
        calls: list[Callable[[], dict[str, Any]]] = [
            functools.partial(self._ask_plan, m, service, variety, profile, name) for m in self.members]
        answers = self._run(calls)
        candidates = []
        for member, (answer, seconds) in zip(self.members, answers, strict=True):
            if isinstance(answer, BaseException):
                candidates.append(Candidate(member.provisioner, member.host, False, (_why(answer),), seconds=seconds))
            else:
                candidates.append(Candidate(**{**answer, "seconds": seconds}))
        return sorted(candidates, key=Candidate.sort_key)

    def _ask_plan(self, member: Member, service: str, variety: str | None, profile: str | None,
                  name: str | None) -> dict[str, Any]:
        client = self.client(member)
        running = [s for s in client.active_services() if s.status != "stopping"]
        taken = {s.name for s in running}
        instance = name or service
        if name is None:
            suffix = 2
            while instance in taken:  # a second instance of the service: a free name, as an orchestrator would
                instance = f"{service}-{suffix}"[:63]
                suffix += 1
        item: dict[str, Any] = {"name": instance, "service": service}
        if variety:
            item["variety"] = variety
        if profile:
            item["profile"] = profile
        current = [{"name": s.name, "service": s.service, **({"variety": s.variety} if s.variety else {}),
                    **({"profile": s.profile} if s.profile else {})} for s in running if s.name != instance]
        base = {"provisioner": member.provisioner, "host": member.host, "instance": instance}
        try:
            entries = client.plan([*current, item])
        except OzwaldAPIError as exc:
            if exc.status >= 500:
                raise
            return {**base, "fits": False, "reasons": (_detail_text(exc.detail),)}
        entry = next((e for e in entries if e.name == instance), None)
        fit = (entry.fit if entry is not None else None) or {}
        reasons = tuple(str(r) for r in [*fit.get("does_not_fit", ()), *fit.get("port_conflicts", ())])
        room = [int(g.get("vram_total_mib") or 0) - int(g.get("vram_declared_total_mib") or 0)
                for g in (fit.get("gpus") or {}).values()]
        try:
            ram = client.host_resources().get("available_ram_gb")
        except OzwaldClientError:
            ram = None
        return {**base, "fits": not reasons, "reasons": reasons, "headroom_vram_mib": min(room) if room else None,
                "headroom_ram_gb": float(ram) if isinstance(ram, int | float) else None, "entry": entry}


def _url(ip: Any, port: int) -> str:
    address = ipaddress.ip_address(str(ip))
    return f"http://[{address}]:{port}" if address.version == 6 else f"http://{address}:{port}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OzwaldAPIError):
        return f"HTTP {exc.status}: {_detail_text(exc.detail)}"
    return str(exc) or type(exc).__name__


def _detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)


def _parallel(pool: ThreadPoolExecutor, calls: Sequence[Callable[[], T]]) -> list[tuple[T | BaseException, float]]:
    """Run every call at once; each answer or exception with its seconds, in the calls' order. The calls
    bound their own time (the client's timeout), so one slow provisioner delays the result by its timeout."""

    def timed(call: Callable[[], T]) -> tuple[T | BaseException, float]:
        started = time.perf_counter()
        try:
            result: T | BaseException = call()
        except Exception as exc:  # reported per provisioner, never raised: one dead host must not hide the rest
            result = exc
        return result, time.perf_counter() - started

    return list(pool.map(timed, calls))
