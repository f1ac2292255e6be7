# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald doctor`: preflight checks, each saying what is wrong and the command that fixes it.

Every check degrades to a finding, never a crash: doctor is what an operator runs when things are broken.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ozwald.config import ResolveError, Settings, resolve
from ozwald.quadlet.keys import KEYS, QUADLET_MIN, Version, format_version
from ozwald.quadlet.on_demand import SOCKET_PROXYD
from ozwald.resources.cdi import CDI_DIRS, cdi_device_names

QUADLET_DIRS = (Path("/run/containers/systemd"), Path("/etc/containers/systemd"))
Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[self.level]
        return f"[{mark}] {self.check}: {self.message}" + (f"\n       fix: {self.fix}" if self.fix else "")


def check_podman(version: Version | None) -> Finding:
    if version is None:
        return Finding("podman", "fail", "cannot tell the Podman version (no API socket, no podman binary)",
                       "apt-get install podman && systemctl enable --now podman.socket")
    if version < QUADLET_MIN:
        return Finding("podman", "fail", f"Podman {format_version(version)} has no Quadlet (needs 4.4)",
                       "upgrade Podman to 5.0 or newer")
    missing = sorted({f"{k.key}={k.value}" if k.value else k.key for k in KEYS if k.since > version})
    if missing:
        return Finding("podman", "warn", f"Podman {format_version(version)} lacks {', '.join(missing)}: "
                                         "units degrade (no Notify=healthy, default stop timeout) or fail to render",
                       "upgrade Podman to 5.0 or newer")
    return Finding("podman", "ok", f"Podman {format_version(version)} accepts every key Ozwald renders")


def check_cdi(settings: Settings, directories: Iterable[Path] = CDI_DIRS) -> list[Finding]:
    provided, broken = cdi_device_names(directories)
    findings = [Finding("cdi", "fail", f"unreadable CDI spec {b}", "regenerate it, e.g. nvidia-ctk cdi generate "
                                                                   "--output=/etc/cdi/nvidia.yaml") for b in broken]
    needed: dict[str, str] = {}
    for service in settings.services:
        varieties: list[str | None] = list(service.varieties) or [None]
        for variety in varieties:
            try:
                spec = resolve(settings, service.name, variety)
            except ResolveError:
                continue
            for device in spec.devices:
                if "=" in device and not device.startswith("/"):
                    needed.setdefault(device, f"{service.name}/{variety or '-'}")
    for device, user in sorted(needed.items()):
        if device in provided:
            findings.append(Finding("cdi", "ok", f"{device} (used by {user}) is provided by a CDI spec"))
            continue
        fix = ("nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" if device.startswith("nvidia.com/")
               else "install the AMD container toolkit and generate /etc/cdi/amd.json (amd-ctk cdi generate)"
               if device.startswith("amd.com/") else "add a CDI spec for it under /etc/cdi")
        findings.append(Finding("cdi", "warn", f"{device} (used by {user}) is in no CDI spec under "
                                               f"{', '.join(map(str, CDI_DIRS))}: that variety cannot start here", fix))
    if not needed:
        findings.append(Finding("cdi", "ok", "no service uses CDI devices"))
    return findings


def check_quadlet_dirs(directories: Iterable[Path] = QUADLET_DIRS) -> list[Finding]:
    findings = []
    for directory in directories:
        probe = directory
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # Ozwald creates missing directories; what matters is the first that exists
        if os.access(probe, os.W_OK):
            findings.append(Finding("quadlet", "ok", f"{directory} is writable"))
        else:
            findings.append(Finding("quadlet", "fail", f"{directory} is not writable by this user",
                                    "run the provisioner as root (units/ozwald.service)"))
    return findings


def on_demand_users(settings: Settings) -> list[str]:
    """The services with a variety or profile that runs on demand, as `service[/variety][:profile]`."""
    users = []
    for service in settings.services:
        varieties: list[str | None] = [*service.varieties] or [None]
        profiles: list[str | None] = [None, *service.profiles]
        for variety in varieties:
            for profile in profiles:
                try:
                    spec = resolve(settings, service.name, variety, profile)
                except ResolveError:
                    continue
                if spec.type == "container" and spec.on_demand is not None:
                    users.append(service.name + (f"/{variety}" if variety else "") + (f":{profile}" if profile else ""))
    return users


def check_socket_proxyd(settings: Settings, path: Path = Path(SOCKET_PROXYD)) -> Finding:
    """An on-demand instance's socket starts a proxy service that runs systemd-socket-proxyd: without it, the
    first connection starts nothing and is refused. Only settings with `on_demand` need it."""
    users = on_demand_users(settings)
    if os.access(path, os.X_OK) and path.is_file():
        return Finding("socket-proxyd", "ok", f"{path} is present" + (f" (on demand: {', '.join(users)})"
                                                                      if users else ""))
    if not users:
        return Finding("socket-proxyd", "ok", f"{path} is missing, but no service runs on demand")
    shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    return Finding("socket-proxyd", "warn", f"{path} is missing or not executable: the on-demand services "
                                            f"{shown} cannot be served (their sockets start no proxy)",
                   "it ships with systemd: reinstall systemd's package (apt-get install --reinstall systemd, or "
                   "dnf reinstall systemd), or take on_demand off those services")


def run_checks(settings: Settings, provisioner: str | None) -> list[Finding]:
    """Every check, against the real host: Podman, CDI, GPU libraries, systemd, Redis, Quadlet directories,
    systemd-socket-proxyd (for on-demand services)."""
    from ozwald.podman import PODMAN_SOCKET_ENV, PodmanInspector, detect_podman_version
    from ozwald.resources import HostResourceMonitor
    from ozwald.state import IdentityError, StateError, connect, select_provisioner
    from ozwald.state.env import cache_parameters
    from ozwald.systemd import BusUnavailable, SystemdClient, SystemdError

    findings: list[Finding] = []
    with PodmanInspector(os.environ.get(PODMAN_SOCKET_ENV)) as podman:
        findings.append(check_podman(detect_podman_version(podman)))
    findings.extend(check_cdi(settings))
    monitor = HostResourceMonitor()
    try:
        for status in monitor.start():
            if status.available:
                findings.append(Finding("gpu", "ok", f"{status.vendor}: driver {status.driver_version}"))
            else:
                fix = ("install nvidia-ml-py (pip install 'ozwald[nvidia]') and the NVIDIA driver"
                       if status.vendor == "nvidia" else "install amdsmi (pip install 'ozwald[amd]') and ROCm")
                findings.append(Finding("gpu", "warn", f"{status.vendor} unavailable: {status.reason}", fix))
    finally:
        monitor.stop()
    try:
        with SystemdClient() as systemd:
            systemd.unit_state("ozwald.service")
        findings.append(Finding("systemd", "ok", "reachable over D-Bus"))
    except (BusUnavailable, SystemdError) as exc:
        findings.append(Finding("systemd", "fail", str(exc), "run on a host booted with systemd, as root"))
    try:
        identity = select_provisioner(settings, provisioner)
        connect(cache_parameters(identity.provisioner)).close()  # connect() pings it
        findings.append(Finding("redis", "ok", f"cache of provisioner {identity.name} reachable"))
    except IdentityError as exc:
        findings.append(Finding("redis", "fail", str(exc), "pass --provisioner NAME or set OZWALD_PROVISIONER"))
    except StateError as exc:
        findings.append(Finding("redis", "fail", str(exc), "systemctl enable --now ozwald.target"))
    findings.extend(check_quadlet_dirs())
    findings.append(check_socket_proxyd(settings))
    return findings
