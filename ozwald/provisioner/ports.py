# SPDX-License-Identifier: AGPL-3.0-or-later
"""Host ports: two instances, or an instance and another program, can never publish the same one.

A container whose host port is taken never starts (Podman cannot bind it), so such a desired set is refused
at the door, whatever `force` says: unlike a resource estimate, a port clash is certain. A port is an
(address, number, protocol); the empty address means every address, and it clashes with any address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ozwald.config import Settings
from ozwald.provisioner.requests import effective_spec
from ozwald.records import DesiredInstance

log = logging.getLogger(__name__)
_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104  # recognised as "every address", never bound


@dataclass(frozen=True, order=True)
class HostPort:
    port: int
    protocol: str
    address: str = ""  # "" = every address

    @classmethod
    def of(cls, port: int, protocol: str, address: str | None) -> HostPort:
        text = "" if address is None or address in _WILDCARDS else str(ipaddress.ip_address(address))
        return cls(port, protocol, text)

    def clashes(self, other: HostPort) -> bool:
        return (self.port, self.protocol) == (other.port, other.protocol) and (
            not self.address or not other.address or self.address == other.address)

    def describe(self) -> str:
        address = self.address if ":" not in self.address else f"[{self.address}]"
        return f"{address or '*'}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class PortConflict:
    port: HostPort
    instances: tuple[str, ...]
    other: str | None = None  # who else holds it, when it is not an instance

    def describe(self) -> str:
        if self.other is not None:
            return (f"port {self.port.describe()}: {self.instances[0]} publishes it, but {self.other} "
                    "already listens on it")
        return f"port {self.port.describe()}: published by both {' and '.join(self.instances)}"

    def detail(self) -> dict[str, Any]:
        return {"resource": "port", "port": self.port.describe(), "instances": list(self.instances),
                "held_by": self.other, "message": self.describe()}


def published_ports(settings: Settings, instances: Sequence[DesiredInstance]) -> dict[str, list[HostPort]]:
    """The host ports each container instance publishes (ports without a host side publish none)."""
    out: dict[str, list[HostPort]] = {}
    for instance in instances:
        spec = effective_spec(settings, instance)
        if spec.type != "container":
            continue
        out[instance.name] = [HostPort.of(p.host, p.protocol, str(p.host_ip) if p.host_ip else None)
                              for p in spec.ports if p.host is not None]
    return out


def ports_in_unit_file(text: str) -> list[HostPort]:
    """The host ports a rendered unit publishes (its `PublishPort=[ip:]host:container/proto` lines): what
    Ozwald's own containers hold until their stop has ended and their file is gone."""
    found = []
    for line in text.splitlines():
        if not line.startswith("PublishPort="):
            continue
        spec, _, protocol = line.removeprefix("PublishPort=").partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) < 2 or not parts[-2]:
            continue  # no host side
        address = parts[0].strip("[]") if len(parts) == 3 else None
        try:
            found.append(HostPort.of(int(parts[-2]), protocol or "tcp", address or None))
        except ValueError:
            continue
    return found


def port_conflicts(wanted: Mapping[str, Sequence[HostPort]], listening: Collection[HostPort],
                   ours: Collection[HostPort]) -> list[PortConflict]:
    """Clashes inside `wanted`, and with ports the host listens on (`listening`) that are not held by
    Ozwald's own instances (`ours`: what the current desired set publishes, which its containers hold)."""
    conflicts: list[PortConflict] = []
    claimed: list[tuple[HostPort, str]] = []
    for name in sorted(wanted):
        for port in wanted[name]:
            for other_port, other in claimed:
                if other != name and port.clashes(other_port):
                    conflicts.append(PortConflict(other_port if not other_port.address else port, (other, name)))
            claimed.append((port, name))
            if any(port.clashes(mine) for mine in ours):
                continue
            for held in listening:
                if port.clashes(held):
                    conflicts.append(PortConflict(port, (name,), f"another process on the host ({held.describe()})"))
                    break
    return conflicts


PROC_NET = Path("/proc/net")
_TCP_LISTEN = "0A"


def _address(hex_address: str) -> str:
    """An address of /proc/net/{tcp,udp}[6]: 32-bit words in the kernel's (little-endian) byte order."""
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    return str(ipaddress.ip_address(b"".join(words)))


def host_listeners(proc_net: Path = PROC_NET) -> set[HostPort]:
    """TCP ports in LISTEN and bound, unconnected UDP ports on this host; empty if they cannot be read.

    Read from /proc/net directly: psutil's net_connections also maps every socket to its process by
    scanning every process's file descriptors (17 ms with 100 processes, on the update path), and the
    owner is not needed here.
    """
    found: set[HostPort] = set()
    for name, protocol in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            lines = (proc_net / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError as exc:  # degrade: the clash inside the desired set is still checked
            log.warning("cannot list the host's listening ports from %s: %s", proc_net / name, exc)
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            local, remote, state = fields[1], fields[2], fields[3]
            if protocol == "tcp" and state != _TCP_LISTEN:
                continue
            if protocol == "udp" and int(remote.partition(":")[2], 16) != 0:
                continue  # a connected UDP socket: a client, not a listener
            address, _, port = local.partition(":")
            try:
                found.add(HostPort.of(int(port, 16), protocol, _address(address)))
            except ValueError:
                continue
    return found
