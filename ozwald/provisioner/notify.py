# SPDX-License-Identifier: AGPL-3.0-or-later
"""The systemd notification protocol (sd_notify), written with the standard library.

A datagram of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
abstract namespace). Without that variable (not run by systemd, or not `Type=notify`) every call is a
no-op, so `ozwald serve` behaves the same in a terminal. Twenty lines of stdlib code instead of a
dependency: python3-systemd would pull in libsystemd bindings for this one call, and `sdnotify` is not
packaged by Debian.
"""

from __future__ import annotations

import os
import socket
import time

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get(NOTIFY_SOCKET_ENV)
        self.address: str | None = None
        if address:
            # "@name" is Linux's abstract namespace, spelled with a leading NUL byte on the wire.
            self.address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send KEY=value lines (keyword names are upper-cased); True if systemd got them."""
        if self.address is None:
            return False
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(ready=1, **({"status": status} if status else {}))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (253+) match the READY=1 that ends the reload.
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def stopping(self) -> bool:
        return self.send(stopping=1)


def watchdog_interval() -> float | None:
    """The watchdog period systemd asked for ($WATCHDOG_USEC, for this very process), in seconds."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
