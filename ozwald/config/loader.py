# SPDX-License-Identifier: AGPL-3.0-or-later
"""Load and validate a settings file, reporting every problem with its file, line and path."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ozwald.config.errors import ConfigError, ConfigIssue
from ozwald.config.model import CONTAINER_ONLY_KEYS, Settings
from ozwald.config.yamlsource import SourceMap, describe_type, load_yaml

DEFAULT_SYSTEM_PATH = Path("/etc/ozwald/ozwald.yml")
LOCAL_NAME = "ozwald.yml"
_IDENT = re.compile(r"^[A-Za-z0-9_.-]+$")


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--config`, else $OZWALD_CONFIG, else ./ozwald.yml if it exists, else /etc/ozwald/ozwald.yml."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("OZWALD_CONFIG")
    if from_env:
        return Path(from_env)
    local = Path.cwd() / LOCAL_NAME
    if local.exists():
        return local
    return DEFAULT_SYSTEM_PATH


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, parse and validate one settings file. Raises ConfigError listing every issue."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("settings file not found", file=file)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(f"cannot read settings file: {exc}", file=file)]) from None
    return parse_settings(text, file)


def parse_settings(text: str, file: str | None = None) -> Settings:
    data, source = load_yaml(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([source.issue((), f"the settings file must be a mapping, not {describe_type(data)}")])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        issues = sorted(_issues_from_validation(exc, data, source), key=lambda i: i.line or 0)
        raise ConfigError(issues) from None
    issues = check_semantics(settings, source)
    if issues:
        raise ConfigError(issues)
    return settings


def _issues_from_validation(exc: ValidationError, data: Any, source: SourceMap) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    for error in exc.errors(include_url=False):
        path = _data_path(error["loc"], data)
        message = _message(error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        issues.append(source.issue(path, message))
    return issues


def _data_path(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """Turn pydantic's location into a path through the YAML, dropping union-member tags."""
    path: list[str | int] = []
    current: Any = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        in_mapping = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_mapping or in_list:
            current = current[part]
            path.append(part)
        elif last and (isinstance(part, int) or _IDENT.match(part)):
            path.append(part)
    return tuple(path)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if kind in ("dict_type", "model_type", "model_attributes_type") and "input" in error:
        message = f"expected a mapping, got {describe_type(error['input'])}"
    elif kind in ("tuple_type", "list_type") and "input" in error:
        message = f"expected a list, got {describe_type(error['input'])}"
    return message


def check_semantics(settings: Settings, source: SourceMap) -> list[ConfigIssue]:
    """Rules that span several entries: unique names, references, and what a container needs."""
    issues: list[ConfigIssue] = []
    sections: tuple[tuple[str, list[str]], ...] = (
        ("hosts", [h.name for h in settings.hosts]),
        ("provisioners", [p.name for p in settings.provisioners]),
        ("services", [s.name for s in settings.services]),
    )
    for section, names in sections:
        counts = Counter(names)
        for index, name in enumerate(names):
            first = names.index(name)
            if counts[name] > 1 and index != first:
                message = f"duplicate name {name!r} (also {section}[{first}])"
                issues.append(source.issue((section, index, "name"), message))
    host_names = {host.name for host in settings.hosts}
    for index, provisioner in enumerate(settings.provisioners):
        if provisioner.host not in host_names:
            known = ", ".join(sorted(host_names)) or "none defined"
            issues.append(source.issue(("provisioners", index, "host"),
                                       f"host {provisioner.host!r} is not defined in hosts ({known})"))
    for index, service in enumerate(settings.services):
        base = ("services", index)
        if service.type != "container":
            issues.extend(_container_keys_on_resource(service, base, source))
            continue
        issues.extend(_missing_images(service, base, source))
        issues.extend(_on_demand_ports(service, base, source))
    return issues


def _on_demand_ports(service: Any, base: tuple[str | int, ...], source: SourceMap) -> list[ConfigIssue]:
    """An on-demand instance is reached through one socket that proxies one port: each variety and profile
    combination that turns it on must publish exactly one TCP port with a host port."""
    issues: dict[tuple[str | int, ...], ConfigIssue] = {}
    varieties: list[tuple[str | None, Any]] = list(service.varieties.items()) or [(None, None)]
    profiles: list[tuple[str | None, Any]] = [(None, None), *service.profiles.items()]
    for variety, variety_layer in varieties:
        for profile, profile_layer in profiles:
            levels = [((*base,), service)]
            if variety_layer is not None:
                levels.append(((*base, "varieties", variety or ""), variety_layer))
            if profile_layer is not None:
                levels.append(((*base, "profiles", profile or ""), profile_layer))
            setting = [(path, layer.on_demand) for path, layer in levels if layer.on_demand is not None]
            if not setting or not setting[-1][1].enabled:
                continue
            ports = next((layer.ports for _, layer in reversed(levels) if layer.ports is not None), ())
            problem = setting[-1][1].port_problem(ports)
            where = (*setting[-1][0], "on_demand")
            if problem is not None and where not in issues:
                combination = ", ".join(f"{kind} {name!r}" for kind, name in (("variety", variety),
                                                                               ("profile", profile)) if name)
                issues[where] = source.issue(where, f"{problem}{f' ({combination})' if combination else ''}")
    return list(issues.values())



def _container_keys_on_resource(service: Any, base: tuple[str | int, ...], source: SourceMap) -> list[ConfigIssue]:
    issues = []
    layers: list[tuple[tuple[str | int, ...], Any]] = [(base, service)]
    layers += [((*base, "varieties", name), layer) for name, layer in service.varieties.items()]
    layers += [((*base, "profiles", name), layer) for name, layer in service.profiles.items()]
    for path, layer in layers:
        for key in CONTAINER_ONLY_KEYS:
            if getattr(layer, key) is not None:
                issues.append(source.issue((*path, key), f"not allowed on a {service.type!r} service: "
                                                         "only container services run"))
    return issues


def _missing_images(service: Any, base: tuple[str | int, ...], source: SourceMap) -> list[ConfigIssue]:
    if service.image is not None or any(p.image is not None for p in service.profiles.values()):
        return []
    if not service.varieties:
        return [source.issue((*base, "image"), "a container service needs an image (set image here, "
                                               "or in each variety)")]
    return [
        source.issue((*base, "varieties", name, "image"), "no image for this variety, and the service sets none")
        for name, variety in service.varieties.items()
        if variety.image is None
    ]
