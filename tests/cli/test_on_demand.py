# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald wake` and `ozwald sleep` in-process against the real API server in front of a fake core; and
`update_services --wait` taking `idle` as settled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ozwald import cli
from ozwald.api import ApiServer
from ozwald.records import ServiceRequest
from tests.cli.conftest import SettlingCore


@pytest.fixture
def chat(served: ApiServer, core: SettlingCore) -> SettlingCore:
    """`chat` runs on demand (the fake core's qwen1.5-vllm), `plain` does not."""
    core.update([ServiceRequest(name="chat", service="qwen1.5-vllm", variety="cpu-only"),
                 ServiceRequest(name="plain", service="fiction-sources")])
    return core


def test_wake_and_sleep_print_what_was_accepted(chat: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wake", "chat"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "wake of chat accepted\n"
    assert cli.main(["sleep", "chat", "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"status": "accepted", "message": "sleep of chat accepted",
                                                   "instance": None, "settled": None}
    assert chat.nudges == [("chat", "wake"), ("chat", "sleep")]


def test_wake_wait_reports_the_status_reached(chat: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    chat.set_status("chat", "idle")
    chat.on_nudge = lambda name, _: chat.set_status(name, "available")
    assert cli.main(["wake", "chat", "--wait", "30"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "chat: available\n"


def test_sleep_wait_reports_idle(chat: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    chat.on_nudge = lambda name, _: chat.set_status(name, "idle")
    assert cli.main(["sleep", "chat", "-w", "30", "--json"]) == cli.EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["settled"] is True and answer["instance"]["status"] == "idle"


def test_a_wake_that_fails_exits_1_with_the_reason(chat: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    chat.set_status("chat", "idle")
    chat.on_nudge = lambda name, _: chat.set_status(name, "failed")
    assert cli.main(["wake", "chat", "--wait", "30"]) == cli.EXIT_FAILED
    assert "error: chat failed: image localhost/nope:latest not found" in capsys.readouterr().err


def test_a_wait_that_runs_out_exits_4(chat: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sleep", "chat", "--wait", "0"]) == cli.EXIT_TIMEOUT  # it stays available
    captured = capsys.readouterr()
    assert captured.out == "chat: available\n"
    assert "error: timed out after 0 s waiting for chat to be idle (it is available)" in captured.err


@pytest.mark.parametrize(("argv", "answered"), [
    (["wake", "plain"], "the API answered 409: instance 'plain' is not on demand; set on_demand on its service"),
    (["sleep", "nope"], "the API answered 404: no instance 'nope' in the desired set"),
])
def test_refusals_are_operator_errors(chat: SettlingCore, capsys: pytest.CaptureFixture[str], argv: list[str],
                                      answered: str) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert f"error: {answered}" in capsys.readouterr().err
    assert chat.nudges == []


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
def test_a_bad_wait_is_refused_by_the_parser(served: ApiServer, capsys: pytest.CaptureFixture[str],
                                             wait: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["wake", "chat", "--wait", wait])
    assert exited.value.code == 2
    assert "expected seconds" in capsys.readouterr().err


def test_update_services_wait_settles_on_idle(served: ApiServer, core: SettlingCore,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An on-demand instance is ready when its socket listens: `idle` ends the wait like `available`."""
    core.set_status("lazy", "idle")
    assert cli.main(["update_services", "lazy", "--wait", "--timeout", "10"]) == cli.EXIT_OK
    assert "lazy: idle (lazy/-/-)" in capsys.readouterr().out


def test_plan_says_which_on_demand_instances_swap(served: ApiServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    wanted = tmp_path / "wanted.json"
    items = [{"name": n, "service": "qwen1.5-vllm", "variety": "cpu-only"} for n in ("chat", "code")]
    wanted.write_text(json.dumps([*items, {"name": "docs", "service": "fiction-sources"}]))
    assert cli.main(["plan", "--file", str(wanted)]) == cli.EXIT_OK
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["chat"].endswith("requested; on demand, swaps with code")
    assert rows["code"].endswith("requested; on demand, swaps with chat")
    assert rows["docs"].endswith("requested")
