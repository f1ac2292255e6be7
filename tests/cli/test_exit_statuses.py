# SPDX-License-Identifier: AGPL-3.0-or-later
"""The exit statuses each action documents, one test per action and status (README, "The command line").

The API actions run against the real server in front of the fake core of `tests/cli/conftest.py`; the
unreachable cases point at a port nothing listens on, or a D-Bus socket that does not exist.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ozwald import cli
from ozwald.api import ApiServer
from ozwald.records import CoreUnavailable
from ozwald.state import QueueFull
from tests.api.conftest import API_KEY
from tests.cli.conftest import SettlingCore

CONTRACT = Path(__file__).resolve().parents[2] / "contrib" / "examples" / "contract.yml"
OK, FAILED, USAGE, UNREACHABLE, TIMEOUT = 0, 1, 2, 3, 4


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The API on a port nothing listens on, systemd's bus at a socket that does not exist."""
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", API_KEY)
    monkeypatch.delenv("OZWALD_BASE", raising=False)
    monkeypatch.setenv("OZWALD_API_PORT", "1")
    monkeypatch.setenv("OZWALD_ENV_FILE", str(tmp_path / "absent.env"))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")


def run(*argv: str) -> int:
    return cli.main(list(argv))


# -- the settings ------------------------------------------------------------------------------------


def test_check_config(tmp_path: Path) -> None:
    assert run("check_config", "--quiet", "--config", str(CONTRACT)) == OK
    bad = tmp_path / "bad.yml"
    bad.write_text("services: [{name: x, type: container, imaeg: y}]\n")
    assert run("check_config", "--config", str(bad)) == USAGE


def test_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("render", "qwen1.5-vllm", "--variety", "cpu-only", "--config", str(CONTRACT)) == OK
    assert run("render", "qwen1.5-vllm", "--variety", "tpu", "--config", str(CONTRACT)) == USAGE
    assert run("render", "qwen1.5-vllm", "--variety", "cpu-only", "--podman-version", "new",
               "--config", str(CONTRACT)) == USAGE
    assert "error: --podman-version: cannot read a Podman version from 'new'" in capsys.readouterr().err


def test_doctor(nowhere: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = run("doctor", "--json", "--config", str(CONTRACT))
    findings = json.loads(capsys.readouterr().out)
    assert code == (FAILED if any(f["level"] == "fail" for f in findings) else OK)
    assert run("doctor", "--config", str(tmp_path / "absent.yml")) == USAGE


# -- the provisioner -----------------------------------------------------------------------------------


def test_serve_without_a_key_is_an_operator_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OZWALD_SYSTEM_KEY", raising=False)
    monkeypatch.setenv("OZWALD_PROVISIONER", "local")
    assert run("serve", "--config", str(CONTRACT)) == USAGE


@pytest.mark.parametrize("action", ["start_provisioner", "stop_provisioner"])
def test_start_and_stop_provisioner_without_a_bus(nowhere: None, action: str) -> None:
    assert run(action) == UNREACHABLE


def test_status(served: ApiServer, core: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("status", "--json") == OK
    assert json.loads(capsys.readouterr().out)["api"]["status"] == "healthy"
    core.components["cache"] = "unreachable"
    assert run("status", "--json") == FAILED


def test_status_without_the_api(nowhere: None) -> None:
    assert run("status") == UNREACHABLE


def test_show_host_resources(nowhere: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("show_host_resources", "--json") == OK  # this host, read here
    assert json.loads(capsys.readouterr().out)["total_cpu_cores"] >= 1
    assert run("show_host_resources", "--use-api") == UNREACHABLE


# -- the services ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["list_configured_services", "list_active_services", "plan"])
def test_the_listing_actions(served: ApiServer, core: SettlingCore, monkeypatch: pytest.MonkeyPatch,
                             action: str) -> None:
    assert run(action) == OK
    method = {"list_configured_services": "configured_services", "list_active_services": "watch_active",
              "plan": "plan"}[action]
    core.raise_on[method] = CoreUnavailable("cache down")
    assert run(action) == UNREACHABLE  # an answer of 503: the provisioner cannot reach its Redis
    core.raise_on.clear()
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", "wrong-key-0123456789")
    assert run(action) == USAGE  # 401


@pytest.mark.parametrize("action", ["list_configured_services", "list_active_services", "plan", "update_services",
                                    "profile"])
def test_the_api_actions_without_the_api(nowhere: None, action: str) -> None:
    assert run(action, *(["x"] if action == "update_services" else [])) == UNREACHABLE


def test_update_services(served: ApiServer, core: SettlingCore, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("update_services", "a", "--wait", "--timeout", "10") == OK
    assert run("update_services", "a", "broken", "--wait", "--timeout", "10") == FAILED
    core.strict_services = True
    assert run("update_services", "nope") == USAGE  # 400 naming the item
    assert run("update_services", "slow", "--wait", "--timeout", "0.5") == USAGE  # strict: slow is unknown
    core.strict_services = False
    assert run("update_services", "slow", "--wait", "--timeout", "0.5") == TIMEOUT
    capsys.readouterr()


def test_update_services_with_no_items_refuses_unless_none(served: ApiServer, core: SettlingCore,
                                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run("update_services", "a")
    calls = len(core.update_calls)
    assert run("update_services") == USAGE
    empty = tmp_path / "empty.yml"
    empty.write_text("[]\n")
    assert run("update_services", "--file", str(empty)) == USAGE
    assert len(core.update_calls) == calls  # nothing was posted
    assert "--none" in capsys.readouterr().err
    assert run("update_services", "a", "--none") == USAGE
    assert run("update_services", "--none") == OK
    assert core.update_calls[-1][0] == [] and core.desired.instances == ()


def test_logs_without_journalctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no journalctl here: execvp fails before replacing the test
    assert run("logs", "x") == UNREACHABLE


# -- profiling -----------------------------------------------------------------------------------------


def _profile_in_the_background(core: SettlingCore, outcome: str) -> threading.Thread:
    def work() -> None:
        core.await_profile_waits(1)
        core.profile_changed(lambda: core.profiles[0].update(state="running", item_id="i-1",
                                                             progress={"phase": "starting"}))
        core.await_profile_waits(2)

        def finish() -> None:
            item = core.profiles.pop(0)
            core.results.append({"service": "qwen1.5-vllm", "request_id": item["request_id"], "outcome": outcome,
                                 "reason": "exited 1" if outcome == "failed" else None})
        core.profile_changed(finish)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("outcome", "status"), [("measured", OK), ("failed", FAILED)])
def test_profile_wait_follows_the_queue_with_blocking_queries(
        served: ApiServer, core: SettlingCore, capsys: pytest.CaptureFixture[str], outcome: str, status: int) -> None:
    thread = _profile_in_the_background(core, outcome)
    assert run("profile", "qwen1.5-vllm", "--wait", "--json", "--timeout", "30") == status
    thread.join(10)
    captured = capsys.readouterr()
    [result] = json.loads(captured.out)  # only JSON on stdout
    assert result["outcome"] == outcome
    assert "queued request req-1" in captured.err and "running (starting)" in captured.err
    # Two blocking queries were answered by a change each, and the first one by the queuing: no polling.
    assert core.profile_waits == 2


def test_profile_statuses(served: ApiServer, core: SettlingCore) -> None:
    assert run("profile") == OK
    assert run("profile", "--results") == OK
    assert run("profile", "a:b:c:d") == USAGE
    assert run("profile", "qwen1.5-vllm", "--wait", "--timeout", "0.5") == TIMEOUT
    core.raise_on["enqueue_profile"] = QueueFull("8 profiling requests are pending (at most 8)")
    assert run("profile", "qwen1.5-vllm") == USAGE  # 429
