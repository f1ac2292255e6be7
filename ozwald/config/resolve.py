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
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ozwald.config.errors import ResolveError
from ozwald.config.keys import Key, Merge
from ozwald.config.model import (
    LAYER_KEYS,
    EnvSource,
    Health,
    Layer,
    OnDemand,
    Port,
    Resources,
    RestartPolicy,
    Service,
    ServiceType,
    Settings,
    Volume,
)
from ozwald.config.secrets import is_secret

DEFAULT_DEVICES: dict[str, tuple[str, ...]] = {
    "nvidia": ("nvidia.com/gpu=all",),
    "amdgpu": ("amd.com/gpu=all",),
    "cpu-only": (),
}
DEFAULT_RESTART: RestartPolicy = LAYER_KEYS["restart"].default
DEFAULT_START_TIMEOUT: float = LAYER_KEYS["start_timeout"].default
DEFAULT_STOP_TIMEOUT: float = LAYER_KEYS["stop_timeout"].default
DEFAULT_RESTART_DELAY: float = LAYER_KEYS["restart_delay"].default
DEFAULT_MIN_UPTIME: float = LAYER_KEYS["min_uptime"].default
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_IDENTITY = ("service", "type", "variety", "profile")


@dataclass(frozen=True)
class EffectiveSpec:
    """Everything needed to run one instance; equal specs render to identical units.

    Besides its identity, it has one field per settings key (`ozwald.config.keys`), checked at import.
    `secret_keys` names the environment variables whose values must never be shown.
    """

    service: str
    type: ServiceType
    variety: str | None
    profile: str | None
    image: str | None
    environment: tuple[tuple[str, str], ...] = field(repr=False)  # may hold secrets
    command: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    ports: tuple[Port, ...]
    volumes: tuple[Volume, ...]
    devices: tuple[str, ...]
    health: Health | None
    restart: RestartPolicy
    restart_delay: float
    start_timeout: float
    stop_timeout: float
    min_uptime: float
    shm_size: str | None
    labels: tuple[tuple[str, str], ...]
    resources: Resources
    persistent: bool
    on_demand: OnDemand | None
    secret_keys: frozenset[str] = frozenset()

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environment)

    def canonical(self) -> dict[str, Any]:
        """A JSON-ready form of the identity and every hashed settings key: the input of the spec hash."""
        names = [*_IDENTITY, *(name for name, key in LAYER_KEYS.items() if key.hashed
                               and not (key.hashed_when_set and getattr(self, name) is None))]
        return {name: _jsonable(getattr(self, name)) for name in names}

    @property
    def spec_hash(self) -> str:
        """A short digest of the canonical spec; a changed config means a changed hash."""
        payload = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


_missing = set(LAYER_KEYS) - {f.name for f in fields(EffectiveSpec)}
if _missing:  # a key added to Layer must reach the spec, or it would never change a running service
    raise TypeError(f"EffectiveSpec lacks settings keys {sorted(_missing)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):  # a model may keep fields out of the hash (what Ozwald does, not what runs)
        return value.model_dump(mode="json", exclude=set(getattr(type(value), "UNHASHED", ())) or None)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


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


def _merged(layers: list[Layer], name: str, key: Key) -> Any:
    """One key's value across the levels, by its merge rule; None when no level sets it."""
    values = [getattr(layer, name) for layer in layers if getattr(layer, name) is not None]
    if not values:
        return None
    if key.merge is Merge.MOST_SPECIFIC:
        return values[-1]
    if key.merge is Merge.MAP:
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    fields_set: dict[str, Any] = {}
    for value in values:
        fields_set.update(value.model_dump(exclude_none=True))
    return type(values[-1])(**fields_set)


def _secret_text(service: str, name: str, source: EnvSource) -> str:
    """The value behind an EnvSource; errors name the file or credential, never its content."""
    if source.value is not None:
        return source.value.get_secret_value()
    if source.file is not None:
        path = Path(source.file)
    else:
        directory = os.environ.get(CREDENTIALS_ENV)
        if not directory:
            raise ResolveError("service", f"service {service!r}: environment {name} needs systemd credential "
                                          f"{source.credential!r}, but the provisioner has no "
                                          f"${CREDENTIALS_ENV} (add LoadCredential= to its unit)")
        path = Path(directory) / str(source.credential)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ResolveError("service", f"service {service!r}: cannot read environment {name} from {path}: "
                                      f"{reason}") from None
    text = text.removesuffix("\n")
    if "\x00" in text:
        raise ResolveError("service", f"service {service!r}: environment {name} from {path} contains NUL bytes")
    return text


def _environment(service: str, merged: dict[str, str | EnvSource] | None
                 ) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    values: dict[str, str] = {}
    secret: set[str] = set()
    for name, value in (merged or {}).items():
        values[name] = _secret_text(service, name, value) if isinstance(value, EnvSource) else value
        if is_secret(name, value):
            secret.add(name)
    return tuple(sorted(values.items())), frozenset(secret)


def _merge(service: Service, layers: list[Layer], variety: str | None, profile: str | None) -> EffectiveSpec:
    values = {name: _merged(layers, name, key) for name, key in LAYER_KEYS.items()}
    if service.type == "container" and values["image"] is None:
        where = f" in variety {variety!r}" if variety else ""
        raise ResolveError("variety" if variety else "service",
                           f"service {service.name!r} has no image{where}: set image on the service or variety")
    if values["devices"] is None:
        values["devices"] = DEFAULT_DEVICES.get(variety or "", ())
    if service.type != "container":
        values["devices"] = ()
    for name, key in LAYER_KEYS.items():
        if values[name] is None and key.default is not None:
            values[name] = key.default
    values["environment"], secret_keys = _environment(service.name, values["environment"])
    values["labels"] = tuple(sorted((values["labels"] or {}).items()))
    values["devices"] = tuple(values["devices"])
    if values["on_demand"] is not None and not values["on_demand"].enabled:
        values["on_demand"] = None  # `on_demand: false` on a profile turns off what the service set
    return EffectiveSpec(service=service.name, type=service.type, variety=variety, profile=profile,
                         secret_keys=secret_keys, **values)
