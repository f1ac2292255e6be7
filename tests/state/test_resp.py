# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's RESP client (ozwald/state/resp.py) against a real Redis, checked through redis-py.

What our client writes is read back with redis-py (`reference_client`), an independent implementation,
and what redis-py writes is read with ours; faults are real: the server is killed with SIGKILL and
started again, passwords are wrong, and stand-in servers that answer nothing or speak HTTP play the
peers a real deployment can meet.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from ozwald.state import resp
from ozwald.state.resp import Client
from tests.support.race import race
from tests.support.redis_server import PASSWORD, RedisServer, free_port


def tcp(server: RedisServer, **options: Any) -> Client:
    return Client(host="127.0.0.1", port=server.port, password=server.password, **options)


def unix(server: RedisServer, **options: Any) -> Client:
    return Client(unix_socket=server.socket_path, password=server.password, **options)


@pytest.fixture(params=["tcp", "unix"])
def client(request: pytest.FixtureRequest, redis_server: RedisServer, redis_client: Client) -> Iterator[Client]:
    """Our client over TCP, then over the unix socket (`redis_client` flushed the database)."""
    made = (tcp if request.param == "tcp" else unix)(redis_server, client_name="resp-test")
    yield made
    made.close()


def kill_and_restart(server: RedisServer) -> None:
    """SIGKILL, not a shutdown: clients get no goodbye, only a dead socket."""
    assert server.process is not None
    server.process.kill()
    server.process.wait(timeout=5)
    server.process = None
    server.start()


def all_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            text += "".join(traceback.format_exception(linked)) + repr(linked)
    return text


# -- replies of every type -------------------------------------------------------------------------------


def test_replies_of_every_type(client: Client, reference_client: redis.Redis) -> None:
    assert client.execute("PING") == "PONG"  # simple string
    assert client.get("missing") is None  # nil bulk string
    assert client.execute("INCRBY", "n", 41) == 41 and client.execute("INCR", "n") == 42  # integer
    assert client.set("s", "héllo wörld") is True
    assert client.get("s") == "héllo wörld" == reference_client.get("s")  # bulk string, UTF-8 both ways
    assert client.set("empty", "") and client.get("empty") == ""
    reference_client.rpush("l", "a", "b", "c")
    assert client.execute("LRANGE", "l", 0, -1) == ["a", "b", "c"]  # array
    assert client.execute("LRANGE", "nothing", 0, -1) == []  # empty array
    assert client.execute("EVAL", "return {1, 'two', {3, false}, nil}", 0) == [1, "two", [3, None]]  # nested
    with pytest.raises(resp.ReplyError) as caught:  # error reply
        client.execute("LPUSH", "s", "x")
    assert caught.value.code == "WRONGTYPE" and "WRONGTYPE" in str(caught.value)
    assert client.ping()  # the connection survived the error


def test_arguments_and_values_round_trip(client: Client, reference_client: redis.Redis) -> None:
    big = "x" * 3_000_000  # many reads of the socket for one reply
    assert client.set("big", big) and client.get("big") == big
    assert client.set("int", 7) and reference_client.get("int") == "7"
    assert client.set("float", 0.5) and reference_client.get("float") == "0.5"
    assert client.set("bytes", b"\x00raw\r\n") and reference_client.get("bytes") == "\x00raw\r\n"
    reference_client.set("undecodable", b"\xff\xfe{")
    assert client.get("undecodable") == "\ufffd\ufffd{"  # replaced, never a decoding exception
    assert client.hset("h", {"a": "1", "b": 2}) == 2
    assert client.hgetall("h") == {"a": "1", "b": "2"} == reference_client.hgetall("h")
    assert client.hgetall("no-hash") == {}
    assert client.delete("h", "int", "no-such-key") == 2
    assert reference_client.exists("h", "int") == 0


def test_client_name_and_db_are_set_on_each_connection(redis_server: RedisServer, redis_client: Client,
                                                       reference_client: redis.Redis) -> None:
    named = tcp(redis_server, client_name="resp-named", db=3)
    named.set("in-three", "1")
    assert reference_client.get("in-three") is None
    assert redis.Redis(port=redis_server.port, db=3, decode_responses=True).get("in-three") == "1"
    clients = reference_client.client_list()
    assert [c["db"] for c in clients if c["name"] == "resp-named"] == ["3"]
    named.execute("FLUSHDB")
    named.close()


# -- pipelines and transactions --------------------------------------------------------------------------


def test_pipeline_sends_many_commands_and_returns_replies_in_order(client: Client,
                                                                   reference_client: redis.Redis) -> None:
    pipe = client.pipeline()
    for i in range(1000):
        pipe.command("RPUSH", "list", i)
    pipe.get("missing").set("k", "v").get("k")
    assert len(pipe) == 1003
    replies = pipe.execute()
    assert replies[:3] == [1, 2, 3] and replies[999] == 1000 and replies[1000:] == [None, "OK", "v"]
    assert reference_client.llen("list") == 1000
    assert pipe.execute() == []  # emptied by execute


def test_pipeline_error_reply_is_raised_after_every_reply_is_read(client: Client,
                                                                  reference_client: redis.Redis) -> None:
    client.set("text", "t")
    pipe = client.pipeline().set("before", "1").command("INCR", "text").set("after", "2")
    with pytest.raises(resp.ReplyError, match="not an integer"):
        pipe.execute()
    assert reference_client.mget("before", "after") == ["1", "2"]  # no transaction: the others ran
    assert client.execute("CLIENT", "ID") == client.execute("CLIENT", "ID")  # the connection stayed pooled
    assert client.get("after") == "2"


def test_transaction_applies_all_or_nothing(client: Client, reference_client: redis.Redis) -> None:
    with client.pipeline(transaction=True) as pipe:
        pipe.set("a", "1").command("INCR", "counter").hset("h", {"f": "v"})
        assert pipe.execute() == ["OK", 1, 1]
    assert reference_client.get("a") == "1" and reference_client.hgetall("h") == {"f": "v"}
    refused = client.pipeline(transaction=True).set("b", "1").command("NO-SUCH-COMMAND")
    with pytest.raises(resp.ReplyError, match="unknown command"):
        refused.execute()  # refused when queued: EXEC aborts the whole transaction
    assert reference_client.get("b") is None
    assert client.ping()


# -- faults -----------------------------------------------------------------------------------------------------


def test_pooled_connections_survive_a_server_restart(redis_server: RedisServer, redis_client: Client) -> None:
    client = tcp(redis_server, retries=0)  # no retry to hide behind: the pool itself notices the dead socket
    client.set("k", "v")
    kill_and_restart(redis_server)
    assert client.get("k") is None  # the server came back empty, and the first request after it works
    assert client.set("k", "again")


def test_a_command_is_retried_until_the_server_is_back(redis_server: RedisServer, redis_client: Client,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("random.random", lambda: 1.0)  # the longest backoff, every time
    client = tcp(redis_server, retries=6, backoff_base=0.05, backoff_cap=0.4)  # 0.1 + 0.2 + 0.4 * 4 s
    client.set("k", "v")
    assert redis_server.process is not None
    redis_server.process.kill()
    redis_server.process.wait(timeout=5)
    redis_server.process = None
    restart = threading.Timer(0.2, redis_server.start)
    restart.start()
    started = time.monotonic()
    assert client.set("k", "after")  # refused, refused, ..., then the new server answers
    assert 0.2 <= time.monotonic() - started < 5
    restart.join()
    assert client.get("k") == "after"


def record_backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoffs the client computes, recorded; it then sleeps for none of them."""
    backoffs: list[float] = []
    original = Client._backoff

    def recorded(self: Client, failures: int) -> float:
        backoffs.append(original(self, failures))
        return 0.0

    monkeypatch.setattr(Client, "_backoff", recorded)
    return backoffs


def test_retries_are_few_and_then_the_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = record_backoffs(monkeypatch)
    client = Client(port=free_port(), retries=2, backoff_base=0.05, backoff_cap=0.5)
    with pytest.raises(resp.ConnectionFailed, match="cannot connect"):
        client.ping()
    assert len(sleeps) == 2 and all(0 <= s <= 0.5 for s in sleeps)
    assert sleeps[0] <= 0.1 and sleeps[1] <= 0.2  # exponential with full jitter


def test_a_silent_server_times_out_and_is_retried() -> None:
    accepted: list[socket.socket] = []

    def silent(conn: socket.socket) -> None:
        accepted.append(conn)
        time.sleep(2)

    with fake_server(silent) as port:
        client = Client(port=port, socket_timeout=0.2, retries=1, backoff_base=0.01)
        started = time.monotonic()
        with pytest.raises(resp.Timeout, match=r"no answer within 0\.2 s"):
            client.ping()
        assert 0.4 <= time.monotonic() - started < 3.0
        assert len(accepted) == 2  # the first try and one retry, each on a new connection


def test_not_redis_is_a_protocol_error_and_not_retried() -> None:
    accepted: list[socket.socket] = []

    def http(conn: socket.socket) -> None:
        accepted.append(conn)
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with fake_server(http) as port:
        with pytest.raises(resp.ProtocolError, match="does not speak RESP"):
            Client(port=port, retries=3).ping()
        assert len(accepted) == 1


def test_wrong_password_is_refused_once_without_showing_it(redis_password_server: RedisServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = record_backoffs(monkeypatch)
    wrong = "wrong-Pa55word-also-secret"
    client = Client(port=redis_password_server.port, password=wrong, retries=3)
    with pytest.raises(resp.AuthenticationFailed, match="password was refused") as caught:
        client.ping()
    assert wrong not in all_text(caught.value) and PASSWORD not in all_text(caught.value)
    assert wrong not in repr(client) and sleeps == []  # a refusal is not retried
    with pytest.raises(resp.AuthenticationFailed, match="requires a password and none was given"):
        Client(port=redis_password_server.port).ping()
    with pytest.raises(resp.AuthenticationFailed, match="requires a password"):
        Client(port=redis_password_server.port, db=1, client_name="x").ping()
    right = Client(unix_socket=redis_password_server.socket_path, password=PASSWORD)
    assert right.ping()
    right.close()


def test_a_password_for_a_server_without_one_is_refused(redis_server: RedisServer, redis_client: Client) -> None:
    with pytest.raises(resp.AuthenticationFailed, match="the server has none"):
        Client(port=redis_server.port, password="unneeded").ping()


def test_a_db_out_of_range_is_refused(redis_server: RedisServer, redis_client: Client) -> None:
    with pytest.raises(resp.Refused, match="cannot select db 999"):
        Client(port=redis_server.port, db=999).ping()


# -- threads ------------------------------------------------------------------------------------------------


def test_threads_share_one_client_without_mixing_replies(client: Client, reference_client: redis.Redis) -> None:
    threads, rounds = 8, 150

    def work(worker: int) -> None:
        for i in range(rounds):
            value = f"{worker}-{i}"
            client.set(f"key-{worker}", value)
            assert client.get(f"key-{worker}") == value
            client.execute("INCR", "shared")
            if i % 10 == 0:
                replies = client.pipeline(transaction=True).set(f"p-{worker}", value).get(f"p-{worker}").execute()
                assert replies == ["OK", value]

    race(work, threads, timeout=60)
    assert reference_client.get("shared") == str(threads * rounds)
    named = [c for c in reference_client.client_list() if c["name"] == "resp-test"]
    assert 1 <= len(named) <= threads  # a pool, not a connection per command


# -- a stand-in peer ----------------------------------------------------------------------------------------


class fake_server:  # used as a context manager, like a function
    """A TCP listener on a free loopback port that hands each accepted connection to `handle` in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)

    def __enter__(self) -> int:
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self._listener.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._handle(conn)
