# SPDX-License-Identifier: AGPL-3.0-or-later
"""Connecting to the provisioner's Redis, and turning its failures into typed errors.

Timeouts are short and retries few on purpose: an API request that needs Redis should answer 503
within seconds when Redis is down, not hang through many retries. Error messages name
the endpoint (host:port or socket path) so an operator knows where to look, and are scrubbed of the
password, which must never reach a log line or an HTTP error body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ozwald.config.model import RedisParameters
from ozwald.state import resp
from ozwald.state.errors import StateError, StateUnavailable

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
RETRIES = 2
CLIENT_NAME = "ozwald"

# Failures that mean "no usable Redis there right now" (503, retry later) rather than a bug: down,
# slow, wrong password, still loading its dataset, a read-only replica, or not Redis at all.
_UNAVAILABLE = (resp.ConnectionFailed, resp.ServerNotReady)


def describe(params: RedisParameters) -> str:
    """Where `params` points, for messages: `unix:/path` or `host:port`, plus the db."""
    where = f"unix:{params.unix_socket}" if params.unix_socket else _host_port(params.host, params.port)
    return f"{where} db {params.db}"


def connect(
    params: RedisParameters,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    socket_timeout: float = SOCKET_TIMEOUT,
    retries: int = RETRIES,
    client_name: str | None = CLIENT_NAME,
    check: bool = True,
) -> resp.Client:
    """A client for `params` (replies decoded to str), shared by every thread of the process.

    With `check` (the default) the server is pinged once, so a wrong address or password fails here, as
    StateUnavailable, rather than at the first real request.
    """
    password = params.password.get_secret_value() if params.password is not None else None
    client = resp.Client(host=params.host, port=params.port, unix_socket=params.unix_socket or None, db=params.db,
                         password=password or None, client_name=client_name, connect_timeout=connect_timeout,
                         socket_timeout=socket_timeout, retries=retries, backoff_base=0.05, backoff_cap=0.5,
                         keepalive=True)
    if check:
        with redis_errors(client, "connecting"):
            client.ping()
    return client


def endpoint_of(client: resp.Client) -> str:
    """The endpoint a client talks to, with its db (stores get a client, not parameters)."""
    return client.describe()


@contextlib.contextmanager
def redis_errors(client: resp.Client, action: str) -> Iterator[None]:
    """Re-raise Redis errors as StateUnavailable (connection, timeout, auth) or StateError (others).

    The original exception is not chained: its text is already in the new message. Python still
    records it as `__context__` (the raise happens while it is being handled), so its own arguments are
    scrubbed in place too; a server error can echo a command's arguments, password included.
    """
    try:
        yield
    except resp.RedisError as exc:
        exc.args = tuple(client.scrub(arg) if isinstance(arg, str) else arg for arg in exc.args)
        endpoint = endpoint_of(client)
        reason = client.scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, _UNAVAILABLE):
            failure: StateError = StateUnavailable(f"Redis at {endpoint} is unavailable ({action}): {reason}",
                                                   endpoint)
        else:
            failure = StateError(f"Redis at {endpoint} failed ({action}): {reason}")
    else:
        return
    raise failure from None


def _host_port(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

