# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald profile` against the real HTTP server (in front of the in-memory core double)."""

from __future__ import annotations

import pytest

from ozwald.api import ApiServer
from ozwald.cli import main
from ozwald.cli.common import UsageError, parse_item
from tests.api.conftest import API_KEY, FakeCore


@pytest.fixture
def env(server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OZWALD_BASE", server.url)
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", API_KEY)


def test_item_syntax_is_update_services_syntax() -> None:
    assert parse_item("llm") == {"name": "llm"}
    assert parse_item("llm:nvidia:fast") == {"name": "llm", "variety": "nvidia", "profile": "fast"}
    assert parse_item("llm::fast") == {"name": "llm", "profile": "fast"}
    with pytest.raises(UsageError, match="NAME"):
        parse_item(":x")


def test_queue_list_and_results(env: None, core: FakeCore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile"]) == 0
    assert "(no profiling requests)" in capsys.readouterr().out
    assert main(["profile", "--results"]) == 0
    out = capsys.readouterr().out
    assert "qwen1.5-vllm/cpu-only/no-gpu: ready in 3.2 s" in out and "RAM peak 312.5 MiB" in out


def test_a_bad_item_is_an_operator_error(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "a:b:c:d"]) == 2
    assert "expected NAME[:VARIETY[:PROFILE]]" in capsys.readouterr().err
