# SPDX-License-Identifier: AGPL-3.0-or-later
"""Bearer auth: who gets in, what a refusal looks like, and that the key never leaks."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import pytest

from ozwald.api import ApiKeyError, check_key, create_app, create_server, key_from_env
from tests.api.conftest import API_KEY, PROTECTED, Api, FakeCore, concrete

CANARY = "canary-Zq8wX3vN7pL2kR9t"


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize("authorization", [
    None,
    "Bearer wrong-key-0123456789abcdef",
    "Bearer " + API_KEY[:-1],
    "Bearer " + API_KEY + "x",
    "Bearer ",
    "Basic " + API_KEY,
    API_KEY,
    "Bearer" + API_KEY,
])
def test_protected_endpoints_refuse_without_the_key(api: Api, core: FakeCore, method: str, path: str, body: Any,
                                                    authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = api.request(method, path, body, token=None, headers=headers)
    assert reply.status == 401
    assert reply.header("WWW-Authenticate") == "Bearer"
    assert reply.header("Content-Type") == "application/json"
    assert isinstance(reply.json()["detail"], str)
    assert API_KEY.encode() not in reply.body
    assert core.update_calls == [] and core.plan_calls == [] and core.profiles == []


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_protected_endpoints_accept_the_key(api: Api, method: str, path: str, body: Any) -> None:
    reply = api.request(method, concrete(api, path), body)
    assert reply.status in (200, 202)
    assert API_KEY.encode() not in reply.body
    assert all(API_KEY not in value for _, value in reply.raw_headers)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer  "])
def test_scheme_is_case_insensitive(api: Api, scheme: str) -> None:
    reply = api.get("/srv/services/active/", token=None, headers={"Authorization": f"{scheme} {API_KEY}"})
    assert reply.status == 200


def test_health_needs_no_key_and_ignores_a_wrong_one(api: Api) -> None:
    assert api.get("/health", token=None).status == 200
    assert api.get("/health", token="wrong").status == 200


def test_the_key_is_compared_with_compare_digest_on_bytes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert api.get("/srv/services/active/", token="wrong-key-0123456789abcdef").status == 401
    assert api.get("/srv/services/active/").status == 200
    assert len(calls) == 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    assert calls[0] == (b"wrong-key-0123456789abcdef", API_KEY.encode())
    assert calls[1] == (API_KEY.encode(), API_KEY.encode())


def test_tokens_never_reach_logs_or_answers(api: Api, core: FakeCore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        replies = [
            api.get("/srv/services/active/", token=CANARY),
            api.post("/srv/services/active/update/", [{"name": "x"}], token=CANARY),
            api.get("/srv/services/active/", headers={"Authorization": f"Basic {CANARY}"}, token=None),
            api.get("/nope", token=CANARY),
            api.request("DELETE", "/srv/services/active/", token=CANARY),
            api.get("/srv/services/active/"),
            api.post("/srv/services/active/update/", [{"name": "bad!"}]),
        ]
        core.raise_on["host_resources"] = RuntimeError("boom")
        replies.append(api.get("/srv/host/resources"))
        # a malformed header line: Waitress's own error page would quote it back
        raw = api.raw(b"GET /srv/services/active/ HTTP/1.1\r\nHost: x\r\nAuthorization Bearer "
                      + CANARY.encode() + b"\r\n\r\n")
    assert [r.status for r in replies] == [401, 401, 401, 404, 405, 200, 400, 500]
    assert b" 400 " in raw.split(b"\r\n")[0]
    for secret in (CANARY, API_KEY):
        assert secret not in caplog.text
        assert all(secret.encode() not in r.body for r in replies)
        assert all(secret not in value for r in replies for _, value in r.raw_headers)
        assert secret.encode() not in raw
    assert "unauthorized request" in caplog.text  # refusals are logged, without the token


@pytest.mark.parametrize("key", [None, "", "Qz7", "Qz7" * 5, " " + "Qz7" * 7, "Qz7" * 7 + "\n",
                                 "Qz7" * 4 + "\x00" * 10])
def test_server_refuses_to_start_with_an_unusable_key(key: str | None) -> None:
    with pytest.raises(ApiKeyError) as info:
        create_server(FakeCore(), key, port=0)  # type: ignore[arg-type]
    assert "OZWALD_SYSTEM_KEY" in str(info.value)
    if key:
        assert key.strip() not in str(info.value)


def test_short_key_message_is_clear() -> None:
    with pytest.raises(ApiKeyError, match="too short: use at least 16 characters"):
        create_app(FakeCore(), "0123456789abcde")
    with pytest.raises(ApiKeyError, match="not set"):
        create_app(FakeCore(), "")


def test_sixteen_characters_are_enough() -> None:
    assert check_key("0123456789abcdef") == b"0123456789abcdef"
    assert check_key("a key with inner spaces") == b"a key with inner spaces"


def test_key_from_env() -> None:
    assert key_from_env({"OZWALD_SYSTEM_KEY": API_KEY}) == API_KEY
    with pytest.raises(ApiKeyError, match="not set"):
        key_from_env({})
    with pytest.raises(ApiKeyError, match="too short"):
        key_from_env({"OZWALD_SYSTEM_KEY": "abc"})


def test_a_non_ascii_key_works(server: Any) -> None:
    """Header bytes are compared as sent: a UTF-8 key matches when the client sends it as UTF-8."""
    key = "clé-secrète-0123456789"
    with create_server(FakeCore(), key, port=0) as other:
        other.start()
        import http.client

        conn = http.client.HTTPConnection(other.host, other.port, timeout=10)
        conn.putrequest("GET", "/srv/services/active/")
        conn.putheader("Authorization", b"Bearer " + key.encode("utf-8"))
        conn.endheaders()
        assert conn.getresponse().status == 200
        conn.close()
