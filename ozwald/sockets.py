# SPDX-License-Identifier: AGPL-3.0-or-later
"""Connecting to a unix socket, for the two local services Ozwald talks to that way (Podman's API and its
own Redis): a socket that failed to connect is closed at once, not left to the garbage collector. And
knocking on a TCP socket, which is how an on-demand instance is woken; and counting the connections to a
loopback port, which is how a swap knows an instance still serves."""

from __future__ import annotations

import socket
from pathlib import Path


def connect_unix(path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def knock(host: str, port: int, timeout: float) -> None:
    """Connect and close at once. The kernel completes the connection from the listening socket's backlog, so
    systemd sees a connection and starts the socket's service; the proxy's idle timer starts once it closes."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


TCP_ESTABLISHED = "01"


def connections_to(port: int, proc_net: Path = Path("/proc/net")) -> int:
    """Established TCP connections from this network namespace to 127.0.0.1:`port` (or [::1]): an on-demand
    instance's requests in flight, which its proxy forwards to the container's loopback port one connection
    each. Read from the kernel's tables (/proc/net/tcp and tcp6): nothing else tells when they end."""
    loopback = {f"0100007F:{port:04X}", f"00000000000000000000000001000000:{port:04X}"}
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_net / table).read_text(encoding="ascii").splitlines()[1:]
        except FileNotFoundError:  # no IPv6
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[2] in loopback and fields[3] == TCP_ESTABLISHED:
                count += 1
    return count
