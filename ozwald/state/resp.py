# SPDX-License-Identifier: AGPL-3.0-or-later
"""RESP over a socket: the small synchronous Redis client of Ozwald's state layer.

The protocol is hiredis's, the Redis project's own C parser, which does no I/O: `hiredis.pack_command`
encodes a request, `hiredis.Reader` parses replies from the bytes it is fed. This module is the thin
adapter around it (the jeepney model: a protocol core without I/O, thin I/O adapters):

- `Client`: a TCP or unix-socket endpoint with AUTH, SELECT and CLIENT SETNAME on every new connection
  (in one round trip), connect and read timeouts, and a pool of connections that several threads share
  (each command borrows one, so no two threads ever interleave on a socket). A command that fails on
  the connection (refused, reset, closed, timed out) is retried on a new one, `retries` times, with
  exponential backoff and full jitter; a refused setup (wrong password, bad db) is not retried.
- `Pipeline`: several commands in one write, optionally as MULTI/EXEC.

Replies are decoded as UTF-8 (undecodable bytes become U+FFFD: the caller's JSON parser then reports a
damaged record). Error replies raise `ReplyError` (or a subclass naming the case); failures of the
connection raise `ConnectionFailed`. Neither ever carries the password: it is sent only in AUTH and
never formatted into a message.

Why not redis-py: `import redis` (8.x) loads about 200 modules (its asyncio client and with it asyncio,
ssl, cluster and observability code) and costs ~19 MB of RSS, more than a third of `ozwald serve`;
hiredis and this module cost about 0.2 MB. Ozwald needs a dozen commands and pipelines.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import hiredis

from ozwald.errors import Exit, OzwaldError
from ozwald.sockets import connect_unix

Arg = str | bytes | int | float
Command = Sequence[Arg]
T = TypeVar("T")

# Its stub declares a 1-tuple and no result type.
_pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]
_MORE = object()  # what Reader.gets() returns while a reply is incomplete
_RECV_SIZE = 65536


# -- errors -------------------------------------------------------------------------------------------


class RedisError(OzwaldError):
    """Anything that went wrong talking to Redis."""

    exit_status = Exit.FAILED


class ConnectionFailed(RedisError):
    """No usable connection: refused, reset, closed by the server, timed out. Retried by `Client`."""

    exit_status = Exit.UNREACHABLE
    http_status = 503


class Timeout(ConnectionFailed):
    """No answer within the connect or read timeout."""


class Refused(ConnectionFailed):
    """The server answered but refused to set the connection up (a bad db number); not retried."""


class AuthenticationFailed(Refused):
    """The password was refused, or one is needed and none was given."""


class ProtocolError(Refused):
    """The peer does not speak RESP: not a Redis server."""


class ReplyError(RedisError):
    """An error reply, such as `ERR unknown command` or `WRONGTYPE ...`."""

    @property
    def code(self) -> str:
        """The error's first word: ERR, WRONGTYPE, ..."""
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


class ServerNotReady(ReplyError):
    """The server cannot serve now: loading its data set, a read-only replica, or out of client slots."""

    exit_status = Exit.UNREACHABLE
    http_status = 503


def reply_error(message: str) -> RedisError:
    """The exception for an error reply, by its code (hiredis calls this for each one it parses)."""
    code = message.split(" ", 1)[0]
    if code == "WRONGPASS" or message.startswith("ERR invalid password"):
        return AuthenticationFailed(f"the password was refused: {message}")
    if code == "NOAUTH":
        return AuthenticationFailed(f"the server requires a password and none was given: {message}")
    if "without any password configured" in message or "no password is set" in message:
        return AuthenticationFailed(f"a password was given but the server has none: {message}")
    if code in ("LOADING", "READONLY", "MASTERDOWN") or message.startswith("ERR max number of clients"):
        return ServerNotReady(message)
    return ReplyError(message)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# -- one connection -----------------------------------------------------------------------------------


class Connection:
    """One socket and the hiredis reader of its replies; used by one thread at a time.

    Any failure of the socket marks it `broken`: its replies can no longer be matched to requests, so
    it is closed rather than reused.
    """

    def __init__(self, sock: socket.socket, socket_timeout: float) -> None:
        self._sock = sock
        self._timeout = socket_timeout
        self._reader = hiredis.Reader(replyError=reply_error, encoding="utf-8", errors="replace", notEnoughData=_MORE)
        self.broken = False

    def send(self, commands: Iterable[Command]) -> None:
        """Write every command in one go (a pipeline is one write and, with TCP_NODELAY, one segment)."""
        data = b"".join(_pack(tuple(command)) for command in commands)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            self.broken = True
            raise Timeout(f"no progress sending within {self._timeout:g} s") from None
        except OSError as exc:
            self.broken = True
            raise ConnectionFailed(f"connection lost while sending: {_reason(exc)}") from None
        except BaseException:
            self.broken = True
            raise

    def read(self) -> Any:
        """The next reply; an error reply is returned as a RedisError instance, not raised. A reply that takes
        longer than the socket timeout raises Timeout."""
        try:
            while True:
                try:
                    reply = self._reader.gets()
                except hiredis.ProtocolError as exc:
                    self.broken = True
                    raise ProtocolError(f"the server does not speak RESP (is it Redis?): {exc}") from None
                if reply is not _MORE:
                    return reply
                try:
                    data = self._sock.recv(_RECV_SIZE)
                except TimeoutError:
                    self.broken = True
                    raise Timeout(f"no answer within {self._timeout:g} s") from None
                except OSError as exc:
                    self.broken = True
                    raise ConnectionFailed(f"connection lost: {_reason(exc)}") from None
                if not data:
                    self.broken = True
                    raise ConnectionFailed("the server closed the connection")
                self._reader.feed(data)
        except RedisError:
            raise
        except BaseException:
            self.broken = True
            raise

    def command(self, *args: Arg) -> Any:
        """Send one command and return its reply; an error reply is raised."""
        self.send([args])
        return self._raise_first_error([self.read()])[0]

    def _raise_first_error(self, replies: Sequence[Any]) -> list[Any]:
        for reply in replies:
            if isinstance(reply, RedisError):
                if isinstance(reply, ConnectionFailed):
                    self.broken = True  # NOAUTH and the like: the connection is of no further use
                raise reply
        return list(replies)

    def pipeline(self, commands: Sequence[Command], *, transaction: bool) -> list[Any]:
        """Send `commands` in one write, read every reply, and raise the first error reply, if any.

        With `transaction` they run between MULTI and EXEC: all or none. Every reply is read before raising,
        so the connection stays usable.
        """
        if not transaction:
            self.send(commands)
            return self._raise_first_error([self.read() for _ in commands])
        self.send([("MULTI",), *commands, ("EXEC",)])
        queued = [self.read() for _ in range(len(commands) + 1)]
        result = self.read()
        self._raise_first_error([*queued, result])  # a command refused when queued: EXEC answered EXECABORT
        return self._raise_first_error(result)

    def idle_and_open(self) -> bool:
        """Whether a pooled connection can be reused: nothing to read on it, not even EOF.

        A restarted or killed server left EOF (or a reset) on every idle connection; this finds it
        without a round trip, so a pooled connection costs no failed request after a restart.
        """
        if self.broken:
            return False
        poller = select.poll()  # not select.select: a busy process may hold descriptors above 1023
        try:
            poller.register(self._sock, select.POLLIN)
            events = poller.poll(0)
        except (OSError, ValueError):
            return False
        return not events  # an event: EOF, a reset, or bytes nobody asked for

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError):
            self._sock.close()


# -- the client -----------------------------------------------------------------------------------------


class Client:
    """A Redis endpoint, reached over TCP (`host`, `port`) or a unix socket (`unix_socket`).

    Safe to share between threads: each command borrows a connection from a small pool (idle ones are
    kept, LIFO) and gives it back once its reply is read. A command that fails on the connection is
    sent again on a new one, at most `retries` times, after a backoff of up to `backoff_base * 2**n`
    seconds (random, capped at `backoff_cap`); so a Redis restart between two commands costs nothing
    but the reconnect. A command retried after a lost reply may run twice.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, unix_socket: str | None = None, db: int = 0,
                 password: str | None = None, client_name: str | None = None, connect_timeout: float = 2.0,
                 socket_timeout: float = 5.0, retries: int = 2, backoff_base: float = 0.05, backoff_cap: float = 0.5,
                 keepalive: bool = True) -> None:
        self.host = host
        self.port = port
        self.unix_socket = unix_socket
        self.db = db
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.keepalive = keepalive
        self._password = password or None
        self._lock = threading.Lock()
        self._idle: list[Connection] = []

    @property
    def endpoint(self) -> str:
        """`unix:/path` or `host:port` (`[v6]:port`): where the client connects, for messages."""
        if self.unix_socket:
            return f"unix:{self.unix_socket}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        """The endpoint and the db, as error messages name them: `127.0.0.1:6379 db 0`."""
        return f"{self.endpoint} db {self.db}"

    def scrub(self, text: str) -> str:
        """`text` with the password replaced by `***` (a server error can echo a command's arguments)."""
        return text.replace(self._password, "***") if self._password else text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # -- connections ------------------------------------------------------------------------------------

    def connect(self) -> Connection:
        """A new connection, authenticated, on the db, named; one attempt, no retry."""
        sock = self._open_socket()
        conn = Connection(sock, self.socket_timeout)
        try:
            self._set_up(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_socket(self) -> socket.socket:
        try:
            if self.unix_socket:
                sock = connect_unix(self.unix_socket, self.connect_timeout)
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except TimeoutError:
            raise Timeout(f"cannot connect: no answer within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect: {_reason(exc)}") from None
        sock.settimeout(self.socket_timeout)
        return sock

    def _set_up(self, conn: Connection) -> None:
        setup: list[Command] = []
        if self._password:
            setup.append(("AUTH", self._password))
        if self.db:
            setup.append(("SELECT", self.db))
        if self.client_name:
            setup.append(("CLIENT", "SETNAME", self.client_name))
        if not setup:
            return
        conn.send(setup)
        replies = [conn.read() for _ in setup]
        for command, reply in zip(setup, replies, strict=True):
            if not isinstance(reply, RedisError):
                continue
            if isinstance(reply, AuthenticationFailed):
                raise reply
            if isinstance(reply, ServerNotReady):
                raise ConnectionFailed(str(reply))  # loading or out of client slots: worth a retry
            if command[0] == "AUTH":
                raise AuthenticationFailed(f"AUTH failed: {reply}")
            if command[0] == "SELECT":
                raise Refused(f"cannot select db {self.db}: {reply}")
            # CLIENT SETNAME only labels the connection in CLIENT LIST; an ACL that forbids it is no failure.

    def _checkout(self) -> Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self.connect()
            if conn.idle_and_open():
                return conn
            conn.close()

    def _checkin(self, conn: Connection) -> None:
        if conn.broken:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_cap, random.random() * self.backoff_base * 2.0**failures)  # noqa: S311 - jitter

    def retrying(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, again after a connection failure (not a refusal), at most `retries` more times."""
        failures = 0
        while True:
            try:
                return attempt()
            except ConnectionFailed as exc:
                failures += 1
                if isinstance(exc, Refused) or failures > self.retries:
                    raise
                time.sleep(self._backoff(failures))

    def call(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on a pooled connection, retried on a new one after a connection failure."""
        def attempt() -> T:
            conn = self._checkout()
            try:
                result = work(conn)
            finally:
                self._checkin(conn)  # after an error reply it is still usable; a broken one is closed
            return result

        return self.retrying(attempt)

    def close(self) -> None:
        """Close the idle connections (a later command opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------------------

    def execute(self, *args: Arg) -> Any:
        """Any command; its reply as hiredis parses it (str, int, None, list). An error reply raises."""
        return self.call(lambda conn: conn.command(*args))

    def ping(self) -> bool:
        return bool(self.execute("PING") == "PONG")

    def get(self, key: str) -> str | None:
        reply = self.execute("GET", key)
        return None if reply is None else str(reply)

    def set(self, key: str, value: Arg) -> bool:
        return bool(self.execute("SET", key, value) == "OK")

    def delete(self, *keys: str) -> int:
        return int(self.execute("DEL", *keys))

    def hset(self, key: str, mapping: Mapping[str, Arg]) -> int:
        return int(self.execute("HSET", key, *_flatten(mapping)))

    def hgetall(self, key: str) -> dict[str, str]:
        return _pairs(self.execute("HGETALL", key))

    def pipeline(self, *, transaction: bool = False) -> Pipeline:
        return Pipeline(self, transaction=transaction)


def _flatten(mapping: Mapping[str, Arg]) -> list[Arg]:
    return [item for pair in mapping.items() for item in pair]


def _pairs(reply: Any) -> dict[str, str]:
    items = list(reply or [])
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


class Pipeline:
    """Commands queued and sent in one write by `execute()`; with `transaction`, inside MULTI/EXEC.

    `execute()` returns the replies in order (raw, as hiredis parses them) or raises the first error
    reply; the whole batch is retried on a connection failure, like a single command.
    """

    def __init__(self, client: Client, *, transaction: bool) -> None:
        self._client = client
        self._transaction = transaction
        self._commands: list[Command] = []

    def command(self, *args: Arg) -> Pipeline:
        self._commands.append(args)
        return self

    def get(self, key: str) -> Pipeline:
        return self.command("GET", key)

    def set(self, key: str, value: Arg) -> Pipeline:
        return self.command("SET", key, value)

    def delete(self, *keys: str) -> Pipeline:
        return self.command("DEL", *keys)

    def hset(self, key: str, mapping: Mapping[str, Arg]) -> Pipeline:
        return self.command("HSET", key, *_flatten(mapping))

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self) -> list[Any]:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        transaction = self._transaction
        return self._client.call(lambda conn: conn.pipeline(commands, transaction=transaction))

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._commands = []
