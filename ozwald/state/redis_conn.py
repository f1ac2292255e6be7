# SPDX-License-Identifier: AGPL-3.0-or-later
"""Connecting to the provisioner's Redis, and turning its failures into typed errors.

Timeouts are short and retries few on purpose: an API request that needs Redis should answer 503
within seconds when Redis is down, not hang for redis-py's default of ten retries. Error messages name
the endpoint (host:port or socket path) so an operator knows where to look, and are scrubbed of the
password, which must never reach a log line or an HTTP error body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

try:  # redis-py >= 6.3; Debian 13 ships 6.1, which has no maintenance notifications to turn off
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - depends on the installed redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from ozwald.config.model import RedisParameters
from ozwald.state.errors import StateError, StateUnavailable

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
RETRIES = 2
# Ping an idle pooled connection before reusing it, so a Redis restart costs one reconnect instead of
# one failed request; also keeps a pub/sub connection honest (a half-open socket never wakes select).
HEALTH_CHECK_INTERVAL = 15
CLIENT_NAME = "ozwald"

# Failures that mean "no usable Redis there right now" (503, retry later) rather than a bug: down,
# slow, wrong password, still loading its dataset, a read-only replica, or not Redis at all.
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                redis.exceptions.InvalidResponse)


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
) -> redis.Redis:
    """A client for `params`, with decoded (str) responses.

    With `check` (the default) the server is pinged once, so a wrong address or password fails here, as
    StateUnavailable, rather than at the first real request.
    """
    password = params.password.get_secret_value() if params.password is not None else None
    kwargs: dict[str, Any] = {
        "db": params.db,
        "password": password or None,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "decode_responses": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "client_name": client_name,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries),
    }
    # A Redis Cloud/Enterprise feature; elsewhere it only costs a failing command per new connection.
    if MaintNotificationsConfig is not None:
        kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if params.unix_socket:
        client = redis.Redis(unix_socket_path=params.unix_socket, **kwargs)
    else:
        client = redis.Redis(host=params.host, port=params.port, socket_keepalive=True, **kwargs)
    if check:
        with redis_errors(client, "connecting"):
            client.ping()
    return client


def endpoint_of(client: redis.Redis) -> str:
    """The endpoint a client talks to, read back from its pool (stores get a client, not parameters)."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        where = f"unix:{kwargs['path']}"
    else:
        where = _host_port(str(kwargs.get("host", "?")), kwargs.get("port", "?"))
    return f"{where} db {kwargs.get('db', 0)}"


@contextlib.contextmanager
def redis_errors(client: redis.Redis, action: str) -> Iterator[None]:
    """Re-raise redis-py errors as StateUnavailable (connection, timeout, auth) or StateError (others).

    The original exception is not chained: its text is already in the new message. Python still
    records it as `__context__` (the raise happens while it is being handled), so its own arguments are
    scrubbed in place too; a server error can echo a command's arguments, password included.
    """
    try:
        yield
    except redis.RedisError as exc:
        exc.args = tuple(_scrub(arg, client) if isinstance(arg, str) else arg for arg in exc.args)
        endpoint = endpoint_of(client)
        reason = _scrub(f"{type(exc).__name__}: {exc}", client)
        if isinstance(exc, _UNAVAILABLE):
            failure: StateError = StateUnavailable(f"Redis at {endpoint} is unavailable ({action}): {reason}",
                                                   endpoint)
        else:
            failure = StateError(f"Redis at {endpoint} failed ({action}): {reason}")
    else:
        return
    raise failure from None


def _scrub(text: str, client: redis.Redis) -> str:
    password = client.connection_pool.connection_kwargs.get("password")
    if isinstance(password, str) and password:
        text = text.replace(password, "***")
    return text


def _host_port(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LuaScript:
    """EVALSHA with a reload on NOSCRIPT: a restarted Redis has forgotten every loaded script.

    redis-py's own Script does the same but is untyped; this keeps the stores mypy-strict.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha: str | None = None

    def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        if self._sha is None:
            self._sha = str(self._client.script_load(self._source))
        try:
            return self._client.evalsha(self._sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self._sha = str(self._client.script_load(self._source))
            return self._client.evalsha(self._sha, len(keys), *keys, *args)
