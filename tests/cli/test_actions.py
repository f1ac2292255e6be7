# SPDX-License-Identifier: AGPL-3.0-or-later
"""The CLI's API actions in-process against the real API server in front of a fake core."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ozwald import cli
from ozwald.api import ApiServer
from ozwald.cli import common, provisioner, services
from ozwald.records import CoreUnavailable
from tests.api.conftest import API_KEY
from tests.cli.conftest import SettlingCore


def test_update_services_wait_reports_available(served: ApiServer, core: SettlingCore,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["update_services", "qwen1.5-vllm:cpu-only:no-gpu", "embed", "--wait", "--timeout", "10"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert "qwen1.5-vllm: available (qwen1.5-vllm/cpu-only/no-gpu)" in out
    assert "embed: available (embed/-/-)" in out
    items, force = core.update_calls[-1]
    assert [(i.name, i.variety, i.profile) for i in items] == [("qwen1.5-vllm", "cpu-only", "no-gpu"),
                                                               ("embed", None, None)]
    assert force is False


def test_update_services_wait_fails_naming_the_reason(served: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["update_services", "ok", "broken", "--wait", "--timeout", "10"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert "error: broken failed: image localhost/nope:latest not found" in captured.err


def test_update_services_from_file(served: ApiServer, core: SettlingCore, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    wanted = tmp_path / "wanted.yml"
    wanted.write_text("- name: a\n  service: qwen1.5-vllm\n  variety: cpu-only\n")
    assert cli.main(["update_services", "--file", str(wanted), "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["status"] == "accepted"
    items, _ = core.update_calls[-1]
    assert (items[0].name, items[0].service, items[0].variety) == ("a", "qwen1.5-vllm", "cpu-only")


def test_bad_file_names_file_and_line(served: ApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wanted = tmp_path / "wanted.yml"
    wanted.write_text("- name: a\n- [unclosed\n")
    assert cli.main(["plan", "--file", str(wanted)]) == cli.EXIT_USAGE
    assert f"error: {wanted}:3: not YAML/JSON" in capsys.readouterr().err


def test_unknown_service_is_an_operator_error(served: ApiServer, core: SettlingCore,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    core.strict_services = True
    assert cli.main(["update_services", "nope"]) == cli.EXIT_USAGE
    assert "the API answered 400" in capsys.readouterr().err


def test_plan_table_and_json(served: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "qwen1.5-vllm:cpu-only"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["INSTANCE", "ACTION", "SERVICE", "VARIETY", "PROFILE", "WHY"]
    assert cli.main(["plan", "qwen1.5-vllm:cpu-only", "--json"]) == cli.EXIT_OK
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["name"] == "qwen1.5-vllm"


def test_lists_as_tables_and_json(served: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["update_services", "x:cpu-only"])
    capsys.readouterr()
    assert cli.main(["list_active_services"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["INSTANCE", "STATUS"] and lines[1].split()[:2] == ["x", "available"]
    assert cli.main(["list_active_services", "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["status"] == "available"
    assert cli.main(["list_configured_services"]) == cli.EXIT_OK
    assert "qwen1.5-vllm" in capsys.readouterr().out
    assert cli.main(["show_host_resources", "--use-api", "--json"]) == cli.EXIT_OK
    assert "total_cpu_cores" in json.loads(capsys.readouterr().out)


def test_unreachable_api_exits_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OZWALD_SYSTEM_KEY", API_KEY)
    monkeypatch.delenv("OZWALD_BASE", raising=False)
    monkeypatch.setenv("OZWALD_ENV_FILE", str(tmp_path / "absent.env"))
    assert cli.main(["list_active_services", "--port", "1"]) == cli.EXIT_UNREACHABLE
    assert "127.0.0.1:1" in capsys.readouterr().err


def test_an_api_answering_503_exits_3(served: ApiServer, core: SettlingCore,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    core.raise_on["configured_services"] = CoreUnavailable("cache unavailable")
    assert cli.main(["list_configured_services"]) == cli.EXIT_UNREACHABLE
    assert capsys.readouterr().err == "error: the API answered 503: cache unavailable\n"


def test_a_bug_exits_70_with_the_traceback_only_in_the_debug_log(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    def broken(args: object) -> int:
        raise ValueError("invalid literal for int() with base 10: 'x'")

    monkeypatch.setattr(services, "cmd_list_active", broken)
    caplog.set_level(logging.DEBUG, logger="ozwald.cli")
    assert cli.main(["list_active_services"]) == cli.EXIT_BUG == 70
    err = capsys.readouterr().err
    assert err.startswith("error: a bug in Ozwald: ValueError: invalid literal") and "Traceback" not in err
    [record] = [r for r in caplog.records if r.name == "ozwald.cli"]
    assert record.levelno == logging.DEBUG and record.exc_info is not None


def test_debug_prints_the_traceback_of_a_bug(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from ozwald import cli; from ozwald.cli import services\n"
            "def broken(args): raise KeyError('generation')\n"
            "services.cmd_list_active = broken\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    plain = subprocess.run([sys.executable, "-c", code, "list_active_services"], capture_output=True, text=True,
                           timeout=60)
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "list_active_services"], capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == debug.returncode == 70
    assert "Traceback" not in plain.stderr and "KeyError: 'generation'" in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr


def test_a_port_out_of_range_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["list_active_services", "--port", "99999"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "--port/--api-port: expected a port from 1 to 65535, got '99999'" in capsys.readouterr().err


def test_key_from_the_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = tmp_path / "ozwald.env"
    env.write_text("# generated\nOZWALD_SYSTEM_KEY=from-the-file-0123456789\nOTHER=x\n")
    monkeypatch.delenv("OZWALD_SYSTEM_KEY", raising=False)
    monkeypatch.setenv("OZWALD_ENV_FILE", str(env))
    common.load_env_file()
    import os

    assert os.environ["OZWALD_SYSTEM_KEY"] == "from-the-file-0123456789"
    assert "OTHER" not in os.environ


def test_parse_item() -> None:
    assert common.parse_item("a") == {"name": "a"}
    assert common.parse_item("a::p") == {"name": "a", "profile": "p"}
    assert common.parse_item("a:v:p") == {"name": "a", "variety": "v", "profile": "p"}
    with pytest.raises(common.UsageError):
        common.parse_item("a:b:c:d")


def test_drop_ins_written_once_and_read_back(tmp_path: Path) -> None:
    args = cli.build_parser().parse_args(["start_provisioner", "--api-port", "8001", "--redis-port", "6380"])
    written = provisioner.write_drop_ins(args, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "ozwald-redis.service.d/50-cli.conf", "ozwald.service.d/50-cli.conf"]
    assert "Environment=OZWALD_REDIS_PORT=6380\n" in (tmp_path / "ozwald-redis.service.d/50-cli.conf").read_text()
    assert provisioner.write_drop_ins(args, tmp_path) == []  # unchanged: no daemon-reload needed
    assert common.drop_in_port(common.PROVISIONER_UNIT, "OZWALD_API_PORT", tmp_path) == 8001


def test_contract_options_parse_where_they_apply() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["start_provisioner", "--api-port", "8001", "--redis-port", "6380", "--no-restart"])
    assert (args.api_port, args.redis_port, args.no_restart) == (8001, 6380, True)
    for action in ("list_configured_services", "list_active_services", "show_host_resources", "status"):
        assert common.api_port(parser.parse_args([action, "--port", "8002"])) == 8002
        assert common.api_port(parser.parse_args([action, "--api-port", "8003"])) == 8003
    assert parser.parse_args(["show_host_resources", "--use-api"]).use_api


@pytest.mark.parametrize(("argv", "flag"), [
    (["list_active_services", "--no-restart"], "--no-restart"),
    (["list_active_services", "--redis-port", "5"], "--redis-port"),
    (["list_active_services", "--use-api"], "--use-api"),
    (["update_services", "x", "--redis-port", "5"], "--redis-port"),
    (["update_services", "x", "--use-api"], "--use-api"),
    (["update_services", "x", "--no-restart"], "--no-restart"),
    (["stop_provisioner", "--api-port", "1"], "--api-port"),
    (["start_provisioner", "--port", "1"], "--port"),
    (["check_config", "--port", "1"], "--port"),
    (["logs", "x", "--config", "y"], "--config"),
])
def test_an_action_refuses_flags_it_does_not_use(argv: list[str], flag: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_man_page_and_completion_cover_every_action_and_option() -> None:
    from ozwald.cli.docs import bash_completion, manpage

    page, completion = manpage(), bash_completion()
    for action in ("start_provisioner", "update_services", "plan", "logs", "status", "check_config"):
        assert f".SS {action}" in page and f"{action}) opts=" in completion
    assert "\\-\\-no\\-restart" in page and "--no-restart" in completion and "--wait" in completion
    assert ".SH EXIT STATUS" in page


def test_check_config_quiet_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    contract = Path(__file__).resolve().parents[2] / "contrib" / "examples" / "contract.yml"
    assert cli.main(["check_config", "--quiet", "--config", str(contract)]) == cli.EXIT_OK
    assert capsys.readouterr().out == ""
