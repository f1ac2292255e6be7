# SPDX-License-Identifier: AGPL-3.0-or-later
"""Resolve (service, variety, profile) into one effective, immutable container spec.

Precedence is base < variety < profile for every key. Maps (environment, labels, resources) merge key
by key; scalars, lists and objects (image, ports, volumes, devices, health, …) take the most specific
level that sets them. `devices` falls back to a default chosen by the variety's name (see
DEFAULT_DEVICES) only when no level sets it, so an explicit `devices: []` means "no devices".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ozwald.config.errors import ResolveError
from ozwald.config.model import Health, Layer, Port, Resources, RestartPolicy, Service, ServiceType, Settings, Volume

DEFAULT_DEVICES: dict[str, tuple[str, ...]] = {
    "nvidia": ("nvidia.com/gpu=all",),
    "amdgpu": ("amd.com/gpu=all",),
    "cpu-only": (),
}
DEFAULT_RESTART: RestartPolicy = "on-failure"
DEFAULT_START_TIMEOUT = 900.0  # model downloads and loads take minutes
DEFAULT_STOP_TIMEOUT = 30.0
DEFAULT_RESTART_DELAY = 2.0


@dataclass(frozen=True)
class EffectiveSpec:
    """Everything needed to run one instance; equal specs render to identical units."""

    service: str
    type: ServiceType
    variety: str | None
    profile: str | None
    image: str | None
    environment: tuple[tuple[str, str], ...]
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    ports: tuple[Port, ...] = ()
    volumes: tuple[Volume, ...] = ()
    devices: tuple[str, ...] = ()
    health: Health | None = None
    restart: RestartPolicy = DEFAULT_RESTART
    restart_delay: float = DEFAULT_RESTART_DELAY
    start_timeout: float = DEFAULT_START_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    shm_size: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    resources: Resources = field(default_factory=Resources)
    persistent: bool = False

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environment)

    def canonical(self) -> dict[str, Any]:
        """A JSON-ready form with a fixed key order, the input of the spec hash."""
        return {
            "service": self.service,
            "type": self.type,
            "variety": self.variety,
            "profile": self.profile,
            "image": self.image,
            "environment": [list(pair) for pair in self.environment],
            "command": list(self.command) if self.command is not None else None,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "ports": [p.model_dump(mode="json") for p in self.ports],
            "volumes": [v.model_dump(mode="json") for v in self.volumes],
            "devices": list(self.devices),
            "health": self.health.model_dump(mode="json") if self.health is not None else None,
            "restart": self.restart,
            "restart_delay": self.restart_delay,
            "start_timeout": self.start_timeout,
            "stop_timeout": self.stop_timeout,
            "shm_size": self.shm_size,
            "labels": [list(pair) for pair in self.labels],
            "resources": self.resources.model_dump(mode="json"),
            "persistent": self.persistent,
        }

    @property
    def spec_hash(self) -> str:
        """A short digest of the canonical spec; a changed config means a changed hash."""
        payload = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def resolve(settings: Settings, service_name: str, variety: str | None = None, profile: str | None = None
            ) -> EffectiveSpec:
    """The effective spec of one service in one variety and profile.

    Unknown names are errors: the predecessor silently ignored them and ran the wrong thing.
    """
    service = settings.service(service_name)
    if service is None:
        known = ", ".join(s.name for s in settings.services) or "none"
        raise ResolveError("service", f"unknown service {service_name!r} (configured: {known})")
    layers: list[Layer] = [service]
    if variety is not None:
        if variety not in service.varieties:
            raise ResolveError("variety", f"service {service.name!r} has no variety {variety!r} "
                                          f"(varieties: {_names(service.varieties)})")
        layers.append(service.varieties[variety])
    elif service.varieties:
        raise ResolveError("variety", f"service {service.name!r} needs a variety "
                                      f"(varieties: {_names(service.varieties)})")
    if profile is not None:
        if profile not in service.profiles:
            raise ResolveError("profile", f"service {service.name!r} has no profile {profile!r} "
                                          f"(profiles: {_names(service.profiles)})")
        layers.append(service.profiles[profile])
    return _merge(service, layers, variety, profile)


def _names(entries: dict[str, Any]) -> str:
    return ", ".join(entries) or "none"


def _most_specific(layers: list[Layer], key: str) -> Any:
    for layer in reversed(layers):
        value = getattr(layer, key)
        if value is not None:
            return value
    return None


def _merged_map(layers: list[Layer], key: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update(getattr(layer, key) or {})
    return merged


def _merge(service: Service, layers: list[Layer], variety: str | None, profile: str | None) -> EffectiveSpec:
    image = _most_specific(layers, "image")
    if service.type == "container" and image is None:
        where = f" in variety {variety!r}" if variety else ""
        raise ResolveError("variety" if variety else "service",
                           f"service {service.name!r} has no image{where}: set image on the service or variety")
    devices = _most_specific(layers, "devices")
    if devices is None:
        devices = DEFAULT_DEVICES.get(variety or "", ())
    resources: dict[str, Any] = {}
    for layer in layers:
        if layer.resources is not None:
            resources.update(layer.resources.model_dump(exclude_none=True))
    start_timeout = _most_specific(layers, "start_timeout")
    stop_timeout = _most_specific(layers, "stop_timeout")
    restart_delay = _most_specific(layers, "restart_delay")
    return EffectiveSpec(
        service=service.name,
        type=service.type,
        variety=variety,
        profile=profile,
        image=image,
        environment=tuple(sorted(_merged_map(layers, "environment").items())),
        command=_most_specific(layers, "command"),
        entrypoint=_most_specific(layers, "entrypoint"),
        ports=_most_specific(layers, "ports") or (),
        volumes=_most_specific(layers, "volumes") or (),
        devices=tuple(devices) if service.type == "container" else (),
        health=_most_specific(layers, "health"),
        restart=_most_specific(layers, "restart") or DEFAULT_RESTART,
        restart_delay=DEFAULT_RESTART_DELAY if restart_delay is None else restart_delay,
        start_timeout=DEFAULT_START_TIMEOUT if start_timeout is None else start_timeout,
        stop_timeout=DEFAULT_STOP_TIMEOUT if stop_timeout is None else stop_timeout,
        shm_size=_most_specific(layers, "shm_size"),
        labels=tuple(sorted(_merged_map(layers, "labels").items())),
        resources=Resources(**resources),
        persistent=bool(_most_specific(layers, "persistent")),
    )
