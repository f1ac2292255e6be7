# SPDX-License-Identifier: AGPL-3.0-or-later
"""Which configured provisioner this process is.

One settings file describes every provisioner (one per GPU host) so that orchestrators and operators
share it; each process must pick its own entry, because the entry decides its Redis keys and its
state file. The choice is, in order: an explicit name (`--provisioner NAME`, then
`$OZWALD_PROVISIONER`); the entry whose host matches this machine's hostname or one of its addresses;
the only entry. Anything else is an error that lists the candidates, because guessing wrong would make
this host act on another host's desired set.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil

from ozwald.config.model import Host, Provisioner, Settings
from ozwald.state.errors import IdentityError

ENV_VAR = "OZWALD_PROVISIONER"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that identify it; built by `detect()`, or by hand in tests."""

    hostname: str
    addresses: frozenset[IPAddress]

    @classmethod
    def detect(cls) -> Machine:
        return cls(hostname=socket.gethostname(), addresses=frozenset(_local_addresses()))

    def describe(self) -> str:
        addresses = ", ".join(sorted(str(a) for a in self.addresses)) or "none"
        return f"hostname {self.hostname!r}, addresses {addresses}"


@dataclass(frozen=True)
class Identity:
    """The chosen entry, its host entry (None if the settings name no such host), and why it won."""

    provisioner: Provisioner
    host: Host | None
    reason: str

    @property
    def name(self) -> str:
        return self.provisioner.name


def select_provisioner(
    settings: Settings,
    name: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    machine: Machine | None = None,
) -> Identity:
    """Pick this process's provisioner entry; raise IdentityError when the choice is not clear-cut.

    `name` is the `--provisioner` option. `environ` and `machine` default to the real environment and
    the real machine; tests pass their own.
    """
    provisioners = settings.provisioners
    candidates = tuple(p.name for p in provisioners)
    hosts = {h.name: h for h in settings.hosts}
    if not provisioners:
        raise IdentityError("no provisioners are configured: add an entry under `provisioners:` in the settings file")

    environ = os.environ if environ is None else environ
    explicit, source = (name, "--provisioner") if name else (environ.get(ENV_VAR) or None, f"${ENV_VAR}")
    if explicit is not None:
        for provisioner in provisioners:
            if provisioner.name == explicit:
                return Identity(provisioner, hosts.get(provisioner.host), f"named by {source}")
        raise IdentityError(
            f"provisioner {explicit!r} (from {source}) is not configured; configured: {', '.join(candidates)}",
            candidates,
        )

    machine = Machine.detect() if machine is None else machine
    strong: list[tuple[Provisioner, Host, str]] = []
    weak: list[tuple[Provisioner, Host, str]] = []
    for provisioner in provisioners:
        host = hosts.get(provisioner.host)
        if host is None:
            continue
        if _same_hostname(host.name, machine.hostname):
            strong.append((provisioner, host, f"host {host.name!r} is this machine's hostname"))
        elif host.ip in machine.addresses or host.ip.is_loopback:
            # A loopback entry (localhost, 127.0.0.1) matches every machine, so it only wins when no
            # entry names this machine specifically: single-host settings keep working unchanged.
            bucket = weak if host.ip.is_loopback else strong
            bucket.append((provisioner, host, f"host {host.name!r} ({host.ip}) is an address of this machine"))

    for matches in (strong, weak):
        if len(matches) == 1:
            provisioner, host, reason = matches[0]
            return Identity(provisioner, host, reason)
        if len(matches) > 1:
            raise IdentityError(
                f"several provisioners match this machine ({machine.describe()}): "
                f"{_list([m[0] for m in matches], hosts)}. Choose one with --provisioner NAME or ${ENV_VAR}.",
                candidates,
            )

    if len(provisioners) == 1:
        provisioner = provisioners[0]
        log.info("provisioner %r does not match this machine (%s); using it as the only entry",
                 provisioner.name, machine.describe())
        return Identity(provisioner, hosts.get(provisioner.host), "the only configured provisioner")
    raise IdentityError(
        f"no provisioner matches this machine ({machine.describe()}); candidates: {_list(provisioners, hosts)}. "
        f"Choose one with --provisioner NAME or ${ENV_VAR}, or fix the hosts: entries.",
        candidates,
    )


def _same_hostname(configured: str, actual: str) -> bool:
    """Equal ignoring case, or equal as short names when only one side is qualified (gpu1 vs gpu1.lan)."""
    a, b = configured.lower().rstrip("."), actual.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    if "." in a and "." in b:
        return False
    return a.split(".", 1)[0] == b.split(".", 1)[0]


def _list(provisioners: Iterable[Provisioner], hosts: Mapping[str, Host]) -> str:
    out = []
    for provisioner in provisioners:
        host = hosts.get(provisioner.host)
        where = f"host {provisioner.host!r}" + (f" {host.ip}" if host else " (not in hosts:)")
        out.append(f"{provisioner.name} ({where})")
    return ", ".join(out)


def _local_addresses() -> Iterable[IPAddress]:
    try:
        interfaces = psutil.net_if_addrs()
    except OSError as exc:  # no /proc/net in some sandboxes: fall back to hostname matching only
        log.warning("cannot list network addresses: %s", exc)
        return
    for snics in interfaces.values():
        for snic in snics:
            if snic.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                yield ipaddress.ip_address(snic.address.split("%", 1)[0])  # drop an IPv6 zone (%eth0)
            except ValueError:
                continue
