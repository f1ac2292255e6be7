# SPDX-License-Identifier: AGPL-3.0-or-later
"""Secret environment values never leave the provisioner: real Provisioner, real Redis, real Waitress."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ozwald.api import ApiServer, create_server
from ozwald.config import ConfigError, parse_settings, resolve
from ozwald.config.secrets import MASK
from ozwald.provisioner.core import Provisioner
from ozwald.quadlet import RenderError, render_unit
from ozwald.state.resp import Client
from ozwald.units import UnitStore
from tests.api.conftest import API_KEY, Api
from tests.support.provisioner_kit import StubReconciler, make_provisioner

PLAIN_TOKEN = "hf_plainTOKENvalue-0001"
INLINE = "inline-SECRET-0002"
FROM_FILE = "file-SECRET-0003"
FROM_CREDENTIAL = "cred-SECRET-0004"
PROFILE_SECRET = "profile-SECRET-0005"
SECRETS = (PLAIN_TOKEN, INLINE, FROM_FILE, FROM_CREDENTIAL, PROFILE_SECRET)


def settings_text(tmp_path: Path) -> str:
    return f"""\
services:
  - name: llm
    image: vllm
    environment:
      HF_TOKEN: {PLAIN_TOKEN}
      API_KEY: {{value: {INLINE}}}
      DB_PASSWORD: {{file: {tmp_path}/db-password}}
      UPSTREAM: {{credential: upstream}}
      CACHE_KEY_PREFIX: {{value: shown-prefix, secret: false}}
      MODEL_NAME: qwen
    profiles:
      rotated:
        environment:
          API_KEY: {{value: {PROFILE_SECRET}}}
  - name: broken
    image: vllm
    environment:
      TOKEN: {{file: {tmp_path}/missing}}
"""


@pytest.fixture
def stack(redis_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[Api, Provisioner, StubReconciler]]:
    (tmp_path / "db-password").write_text(FROM_FILE + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "upstream").write_text(FROM_CREDENTIAL)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    provisioner, reconciler = make_provisioner(settings_text(tmp_path), redis_client, tmp_path)
    server: ApiServer = create_server(provisioner, API_KEY, host="127.0.0.1", port=0)
    server.start()
    try:
        yield Api(server), provisioner, reconciler
    finally:
        server.close()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_configured_services_mask_secrets_and_secret_looking_keys(stack: tuple[Api, Provisioner, StubReconciler],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    api, _, _ = stack
    reply = api.get("/srv/services/configured/")
    assert reply.status == 200
    assert_no_secret(reply.body.decode())
    llm = next(s for s in reply.json() if s["name"] == "llm")
    assert llm["environment"] == {"HF_TOKEN": MASK, "API_KEY": MASK, "DB_PASSWORD": MASK, "UPSTREAM": MASK,
                                  "CACHE_KEY_PREFIX": "shown-prefix", "MODEL_NAME": "qwen"}
    assert llm["profiles"]["rotated"]["environment"] == {"API_KEY": MASK}
    assert_no_secret(caplog.text)


def test_plan_names_a_changed_secret_but_never_shows_it(stack: tuple[Api, Provisioner, StubReconciler],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    api, provisioner, reconciler = stack
    running = render_unit(resolve(provisioner.settings, "llm"), "llm")
    reconciler.units.write(running, persistent=False)
    reply = api.post("/srv/services/active/plan/", [{"name": "llm", "profile": "rotated"}])
    assert reply.status == 200
    assert_no_secret(reply.body.decode())
    [entry] = reply.json()
    assert entry["action"] == "restart" and "API_KEY" in entry["reason"]
    assert_no_secret(caplog.text)


def test_errors_name_the_secret_file_never_a_value(stack: tuple[Api, Provisioner, StubReconciler],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    api, _, _ = stack
    for path in ("/srv/services/active/plan/", "/srv/services/active/update/"):
        reply = api.post(path, [{"name": "llm"}, {"name": "broken"}])
        assert reply.status == 400
        assert "missing" in reply.json()["detail"]["message"]
        assert_no_secret(reply.body.decode())
    assert_no_secret(caplog.text)


def test_update_with_secrets_is_accepted_and_stores_no_value(stack: tuple[Api, Provisioner, StubReconciler],
                                                             redis_client: Client, tmp_path: Path) -> None:
    api, _, reconciler = stack
    reply = api.post("/srv/services/active/update/", [{"name": "llm", "profile": "rotated"}])
    assert reply.status == 202, reply.body
    assert reconciler.woke.wait(5)
    assert_no_secret(reply.body.decode())
    stored = [str(redis_client.execute("DUMP", k)) for k in redis_client.execute("KEYS", "*")]
    assert stored and all(secret not in text for text in stored for secret in SECRETS)
    for path in (tmp_path / "state").iterdir():
        assert_no_secret(path.read_text())


def test_the_container_gets_the_values(stack: tuple[Api, Provisioner, StubReconciler]) -> None:
    _, provisioner, _ = stack
    spec = resolve(provisioner.settings, "llm", None, "rotated")
    assert spec.env["API_KEY"] == PROFILE_SECRET and spec.env["DB_PASSWORD"] == FROM_FILE
    assert spec.env["UPSTREAM"] == FROM_CREDENTIAL and spec.env["HF_TOKEN"] == PLAIN_TOKEN
    assert spec.secret_keys == {"HF_TOKEN", "API_KEY", "DB_PASSWORD", "UPSTREAM"}
    assert_no_secret(repr(spec))
    unit = render_unit(spec, "llm")
    assert_no_secret(unit.text)  # Quadlet would copy it into the service's command line, readable by anyone
    assert "EnvironmentFile=ozwald-llm.env" in unit.text and "MODEL_NAME=qwen" in unit.text
    assert unit.env_file is not None and f"API_KEY={PROFILE_SECRET}\n" in unit.env_file
    assert "MODEL_NAME" not in unit.env_file and "CACHE_KEY_PREFIX" not in unit.env_file
    assert_no_secret(repr(unit))


def test_the_secret_file_is_written_private_next_to_the_unit_and_removed_with_it(tmp_path: Path) -> None:
    store = UnitStore(tmp_path / "run", tmp_path / "etc")
    settings = parse_settings(f"services:\n  - name: s\n    image: x\n    environment: {{HF_TOKEN: {PLAIN_TOKEN}}}\n")
    store.write(render_unit(resolve(settings, "s"), "s"), persistent=False)
    env = tmp_path / "run" / "ozwald-s.env"
    assert env.read_text() == f"HF_TOKEN={PLAIN_TOKEN}\n" and env.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "run" / "ozwald-s.container").stat().st_mode & 0o777 == 0o600
    store.write(render_unit(resolve(settings, "s"), "s"), persistent=True)
    assert not env.exists() and (tmp_path / "etc" / "ozwald-s.env").exists()
    assert list(store.existing()) == ["s"]
    store.remove("s")
    assert list((tmp_path / "etc").iterdir()) == []


def test_a_multi_line_secret_cannot_be_rendered(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("line one\nline two\n")
    settings = parse_settings(f"services:\n  - name: s\n    image: x\n"
                              f"    environment: {{K: {{file: {tmp_path}/key}}}}\n")
    with pytest.raises(RenderError, match="secret value of K spans several lines") as raised:
        render_unit(resolve(settings, "s"), "s")
    assert "line one" not in str(raised.value)


def test_a_missing_credential_directory_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    settings = parse_settings("services:\n  - name: s\n    image: x\n    environment: {T: {credential: tok}}\n")
    with pytest.raises(Exception, match=r"needs systemd credential 'tok'.*LoadCredential="):
        resolve(settings, "s")


@pytest.mark.parametrize("bad", ['{value: "a\\0b"}', '{value: "\\uD800x"}', "{value: x, file: /y}", "{file: rel}"])
def test_invalid_secret_settings_never_echo_the_value(bad: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as raised:
        parse_settings(f"services:\n  - name: s\n    image: x\n    environment:\n      T: {bad}\n")
    message = str(raised.value)
    assert "environment.T" in message
    for fragment in ("a\x00b", "\ud800", "\\0", "x, file"):
        assert fragment not in message
