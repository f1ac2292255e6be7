# SPDX-License-Identifier: AGPL-3.0-or-later
import traceback

import pytest
from pydantic import SecretStr

from ozwald.config.model import RedisParameters
from ozwald.state import StateUnavailable, connect, describe, endpoint_of
from ozwald.state.redis_conn import redis_errors
from tests.support.redis_server import PASSWORD, RedisServer, free_port


def _all_text(exc: BaseException) -> str:
    """Everything an exception can show, its suppressed context included (some tools print it anyway)."""
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            text += "".join(traceback.format_exception(linked)) + repr(linked) + str(linked.args)
    return text


def test_connects_by_host_and_port(redis_server: RedisServer) -> None:
    client = connect(redis_server.params())
    assert client.set("k", "v") and client.get("k") == "v"  # decoded: str, not bytes
    assert endpoint_of(client) == f"127.0.0.1:{redis_server.port} db 0"
    client.close()


def test_connects_by_unix_socket(redis_server: RedisServer) -> None:
    client = connect(RedisParameters(unix_socket=redis_server.socket_path, db=2))
    assert client.ping()
    assert client.unix_socket == redis_server.socket_path
    assert endpoint_of(client) == f"unix:{redis_server.socket_path} db 2"
    client.close()


def test_selects_the_configured_db(redis_server: RedisServer) -> None:
    one = connect(redis_server.params(db=1))
    zero = connect(redis_server.params(db=0))
    one.execute("FLUSHDB")
    zero.set("only-in-zero", "1")
    assert one.get("only-in-zero") is None
    zero.delete("only-in-zero")


def test_connects_with_password(redis_password_server: RedisServer) -> None:
    client = connect(redis_password_server.params())
    assert client.ping()
    assert PASSWORD not in repr(client) and PASSWORD not in str(client)
    client.close()


def test_wrong_password_is_unavailable_and_never_shown(redis_password_server: RedisServer) -> None:
    wrong = "wrong-Pa55word-also-secret"
    with pytest.raises(StateUnavailable) as caught:
        connect(redis_password_server.params(password=SecretStr(wrong)))
    text = _all_text(caught.value)
    assert f"127.0.0.1:{redis_password_server.port}" in str(caught.value)
    assert wrong not in text and PASSWORD not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_password_is_unavailable(redis_password_server: RedisServer) -> None:
    with pytest.raises(StateUnavailable, match="unavailable"):
        connect(redis_password_server.params(password=None))


def test_refused_connection_names_endpoint_not_password() -> None:
    port = free_port()
    params = RedisParameters(host="127.0.0.1", port=port, password=SecretStr(PASSWORD))
    with pytest.raises(StateUnavailable) as caught:
        connect(params, connect_timeout=0.5, retries=0)
    assert caught.value.endpoint == f"127.0.0.1:{port} db 0"
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert PASSWORD not in _all_text(caught.value)


def test_missing_socket_names_the_path() -> None:
    params = RedisParameters(unix_socket="/nonexistent/ozwald-redis.sock", password=SecretStr(PASSWORD))
    with pytest.raises(StateUnavailable, match=r"unix:/nonexistent/ozwald-redis\.sock") as caught:
        connect(params, retries=0)
    assert PASSWORD not in _all_text(caught.value)


def test_unchecked_connect_defers_the_failure() -> None:
    client = connect(RedisParameters(host="127.0.0.1", port=free_port()), check=False, retries=0)
    with pytest.raises(StateUnavailable), redis_errors(client, "probing"):
        client.ping()


def test_server_errors_become_state_errors_with_the_password_scrubbed(redis_password_server: RedisServer) -> None:
    from ozwald.state import StateError

    client = connect(redis_password_server.params())
    with pytest.raises(StateError) as caught, redis_errors(client, "probing"):
        client.execute("NO-SUCH-COMMAND", PASSWORD)  # echoed back
    assert not isinstance(caught.value, StateUnavailable)
    assert "***" in str(caught.value)
    assert PASSWORD not in _all_text(caught.value)


def test_describe() -> None:
    assert describe(RedisParameters(host="::1", port=6380, db=3)) == "[::1]:6380 db 3"
    assert describe(RedisParameters(unix_socket="/run/redis.sock")) == "unix:/run/redis.sock db 0"
    assert PASSWORD not in describe(RedisParameters(password=SecretStr(PASSWORD)))


def test_something_else_listening_is_unavailable() -> None:
    """A wrong port that answers in another protocol is a configuration problem, not an internal error."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(StateUnavailable, match=f"127.0.0.1:{port}"):
            connect(RedisParameters(port=port, password=SecretStr(PASSWORD)), retries=0)
    finally:
        server.close()
