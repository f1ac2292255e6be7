# SPDX-License-Identifier: AGPL-3.0-or-later
"""Connecting to a unix socket, for the two local services Ozwald talks to that way (Podman's API and its
own Redis): a socket that failed to connect is closed at once, not left to the garbage collector. And
knocking on a TCP socket, which is how an on-demand instance is woken."""

from __future__ import annotations

import socket


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
