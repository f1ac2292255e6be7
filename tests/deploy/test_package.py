# SPDX-License-Identifier: AGPL-3.0-or-later
"""The Debian package installed for real in a freshly booted Debian 13 test host (issue 10, section 3).

The steps share one host and run in order, as an operator would do them:
install → enable --now → CLI in the guest, API from here → reload (changed env, then a broken file) →
restart (services untouched, adopted) → kill -STOP (watchdog) → purge (nothing of Ozwald left running).
Needs dist/ozwald_*_all.deb (`make packages`, which `make test` runs first).
"""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import Iterator

import pytest

from tests.deploy.package import API_PORT, ENV_FILE, SETTINGS, InstalledOzwald, find_deb
from tests.testhost.harness import TestHost

pytestmark = pytest.mark.testhost

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def ozwald(testhost: TestHost) -> Iterator[InstalledOzwald]:
    try:
        deb = find_deb()
    except AssertionError as exc:
        pytest.fail(str(exc))
    started = time.monotonic()
    installed = InstalledOzwald(testhost, deb)
    yield installed
    TIMINGS["total_s"] = time.monotonic() - started
    TIMINGS.update(installed.timings)
    print("\ninstalled-package test timings: " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(TIMINGS.items())))


def test_install_creates_secrets_and_enables_the_target_without_starting(ozwald: InstalledOzwald) -> None:
    ozwald.install()
    host = ozwald.host
    for path in (ENV_FILE, "/etc/ozwald/redis-auth.conf"):
        mode = stat.S_IMODE(host.guest_path(path).stat().st_mode)
        assert mode == 0o600, f"{path} has mode {mode:o}"
    env = ozwald.env_file()
    assert len(env["OZWALD_SYSTEM_KEY"]) >= 32 and len(env["OZWALD_REDIS_PASSWORD"]) >= 32
    assert host.read_file("/etc/ozwald/redis-auth.conf") == f"requirepass {env['OZWALD_REDIS_PASSWORD']}\n"
    assert ozwald.systemctl("is-enabled", "ozwald.target").stdout.strip() == "enabled"
    units = [f"/usr/lib/systemd/system/{u}" for u in ("ozwald.service", "ozwald-redis.service", "ozwald.target")]
    verify = host.exec(["systemd-analyze", "verify", "--man=no", *units])  # the guest has no man command
    assert verify.returncode == 0 and "ozwald" not in verify.stdout + verify.stderr, verify.stdout + verify.stderr
    for unit in ("ozwald.service", "ozwald-redis.service", "ozwald.target"):
        assert ozwald.systemctl("is-active", unit, check=False).stdout.strip() == "inactive", unit
    # Every module imports with Debian's python3-* packages (their versions, not PyPI's).
    walk = ("import importlib, pkgutil, ozwald; [importlib.import_module(m.name) "
            "for m in pkgutil.walk_packages(ozwald.__path__, 'ozwald.') if not m.name.endswith('__main__') "
            "and 'nvidia' not in m.name and 'amd' not in m.name]; print('ok')")
    imported = host.exec(["python3", "-c", walk])
    assert imported.stdout.strip() == "ok", imported.stdout + imported.stderr
    # The packaged example settings validate, and the man page and completion are installed.
    assert ozwald.ozwald("check_config").returncode == 0
    assert host.guest_path("/usr/share/man/man1/ozwald.1.gz").exists()
    assert host.guest_path("/usr/share/bash-completion/completions/ozwald").exists()
    assert json.loads(host.read_file("/usr/share/doc/ozwald/grafana/ozwald.json"))["uid"] == "ozwald"
    # Reinstalling (an upgrade of the same version) never overwrites the secrets.
    ozwald.install()
    assert ozwald.env_file()["OZWALD_SYSTEM_KEY"] == env["OZWALD_SYSTEM_KEY"]


def test_enable_now_returns_once_the_api_answers(ozwald: InstalledOzwald) -> None:
    ozwald.write_settings(ozwald.example_settings_with_test_service())
    ozwald.open_api_to_the_test_machine()
    started = time.monotonic()
    ozwald.systemctl("enable", "--now", "ozwald.target")
    ozwald.timings["enable_now_s"] = time.monotonic() - started
    status, body = ozwald.request("GET", "/health", timeout=5)  # at once: no retry loop
    assert (status, body["status"]) == (200, "healthy"), body
    assert ozwald.show("ozwald.service", "Type")["Type"] == "notify"
    status_text = ozwald.show("ozwald.service", "StatusText")["StatusText"]
    assert re.fullmatch(r"0 instances: 0 available, 0 starting, 0 failed", status_text), status_text
    assert ozwald.active() == {}, "Ozwald's own ozwald-redis.service is no instance"
    # Ozwald's own Redis: the unix socket and no TCP port at all, password required.
    redis = ozwald.host.exec(["redis-cli", "-s", "/run/ozwald-redis/redis.sock", "ping"])
    assert "NOAUTH" in redis.stdout + redis.stderr
    listening = ozwald.host.exec(["ss", "-Hltn"]).stdout
    assert f":{API_PORT} " in listening
    assert "6379" not in listening or "redis-server.service" in ozwald.systemctl(
        "list-units", "--state=active", "redis-server.service", check=False).stdout


def test_cli_in_the_guest_and_api_from_here(ozwald: InstalledOzwald) -> None:
    status = ozwald.ozwald("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ozwald.service" in status.stdout and "active (running)" in status.stdout
    assert "redis:  PONG" in status.stdout
    configured = ozwald.ozwald("list_configured_services", "--json")
    assert {s["name"] for s in json.loads(configured.stdout)} >= {"qwen1.5-vllm", "hello"}
    plan = ozwald.ozwald("plan", "hello")
    assert plan.returncode == 0 and re.search(r"^hello\s+start", plan.stdout, re.MULTILINE), plan.stdout
    update = ozwald.ozwald("update_services", "hello", "--wait", "--timeout", "120", timeout=180)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "hello: available" in update.stdout
    active = ozwald.ozwald("list_active_services")
    assert re.search(r"^hello\s+available", active.stdout, re.MULTILINE), active.stdout
    logs = ozwald.ozwald("logs", "hello", "-n", "20")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    # The API from the test machine: the same instance, then stop it.
    assert ozwald.active()["hello"]["status"] == "available"
    assert ozwald.service_env()["GREETING"] == "one"
    status_code, body = ozwald.request("POST", "/srv/services/active/update/", [])
    assert status_code == 202, body
    ozwald.wait_for(lambda: "hello" not in ozwald.active(), 60, "hello to stop")
    state = ozwald.systemctl("is-active", "ozwald-hello.service", check=False).stdout.strip()
    assert state in ("inactive", "unknown"), state


def test_reload_applies_a_changed_env_and_refuses_a_broken_file(ozwald: InstalledOzwald) -> None:
    status_code, body = ozwald.request("POST", "/srv/services/active/update/", [{"name": "hello"}])
    assert status_code == 202, body
    before = ozwald.wait_available("hello")
    ozwald.write_settings(ozwald.example_settings_with_test_service(greeting="two"))
    started = time.monotonic()
    ozwald.systemctl("reload", "ozwald.service")
    ozwald.wait_for(lambda: ozwald.active()["hello"]["info"].get("invocation") not in
                    (None, before["info"].get("invocation")), 60, "hello restarted")
    ozwald.wait_available("hello")
    ozwald.timings["reload_to_available_s"] = time.monotonic() - started
    assert ozwald.service_env()["GREETING"] == "two"

    good = ozwald.host.read_file(SETTINGS)
    current = ozwald.active()["hello"]
    broken = good.replace("    image: localhost/ozwald-testserver", "    imgae: localhost/ozwald-testserver")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "imgae:" in text)
    ozwald.write_settings(broken)
    result = ozwald.systemctl("reload", "ozwald.service", check=False)
    assert result.returncode != 0, "a reload with a broken settings file must fail"
    journal = ozwald.host.journal("ozwald.service", lines=60)
    assert f"{SETTINGS}:{line}:" in journal and "imgae: unknown key" in journal, journal
    time.sleep(2)  # nothing may change: same container, same settings in force
    after = ozwald.active()["hello"]
    assert after["status"] == "available"
    assert after["info"].get("invocation") == current["info"].get("invocation")
    assert ozwald.systemctl("is-active", "ozwald.service").stdout.strip() == "active"
    ozwald.write_settings(good)


def test_restart_leaves_services_running_and_adopts_them(ozwald: InstalledOzwald) -> None:
    before = ozwald.show("ozwald-hello.service", "InvocationID", "MainPID")
    old_pid = ozwald.show("ozwald.service", "MainPID")["MainPID"]
    started = time.monotonic()
    ozwald.systemctl("restart", "ozwald.service")
    ozwald.timings["restart_s"] = time.monotonic() - started
    assert ozwald.show("ozwald.service", "MainPID")["MainPID"] != old_pid
    assert ozwald.show("ozwald-hello.service", "InvocationID", "MainPID") == before
    hello = ozwald.wait_available("hello", 30)
    assert hello["info"].get("invocation") == before["InvocationID"]


def test_watchdog_restarts_a_stopped_provisioner(ozwald: InstalledOzwald) -> None:
    before = ozwald.show("ozwald.service", "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] == "20s", before
    hello = ozwald.show("ozwald-hello.service", "InvocationID")
    started = time.monotonic()
    ozwald.sh("kill", "-STOP", before["MainPID"])
    ozwald.wait_for(lambda: ozwald.show("ozwald.service", "NRestarts")["NRestarts"] != before["NRestarts"],
                    90, "the watchdog to restart ozwald.service")
    ozwald.wait_for(lambda: ozwald.request("GET", "/health", timeout=2)[0] == 200, 60, "the API back")
    ozwald.timings["watchdog_restart_s"] = time.monotonic() - started
    assert "watchdog timeout" in ozwald.host.journal("ozwald.service", lines=80).lower()
    assert ozwald.show("ozwald-hello.service", "InvocationID") == hello
    ozwald.wait_available("hello", 30)


def test_stop_and_start_provisioner_drive_only_ozwalds_units(ozwald: InstalledOzwald) -> None:
    shared_redis = ozwald.systemctl("is-active", "redis-server.service", check=False).stdout.strip()
    hello = ozwald.show("ozwald-hello.service", "InvocationID")
    stop = ozwald.ozwald("stop_provisioner")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    for unit in ("ozwald.service", "ozwald-redis.service", "ozwald.target"):
        assert ozwald.systemctl("is-active", unit, check=False).stdout.strip() == "inactive", unit
    # The host's shared Redis and the services Ozwald runs are not Ozwald's units to stop.
    assert ozwald.systemctl("is-active", "redis-server.service", check=False).stdout.strip() == shared_redis
    assert ozwald.show("ozwald-hello.service", "InvocationID") == hello

    start = ozwald.ozwald("start_provisioner", "--api-port", "8001", "--redis-port", "6380")
    assert start.returncode == 0, start.stdout + start.stderr
    assert "ozwald.service: start done" in start.stdout, start.stdout
    ozwald.api_port = 8001
    status, _ = ozwald.request("GET", "/health", timeout=5)  # at once: the start job waited for READY=1
    assert status == 200
    listening = ozwald.host.exec(["ss", "-Hltn"]).stdout
    assert "127.0.0.1:6380 " in listening and "0.0.0.0:6380" not in listening, listening
    assert "*:6380" not in listening, listening
    report = ozwald.ozwald("status", "--json")  # finds port 8001 in the drop-in by itself
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["api"]["status"] == "healthy"
    pid = ozwald.show("ozwald.service", "MainPID")["MainPID"]
    again = ozwald.ozwald("start_provisioner", "--no-restart")
    assert again.returncode == 0 and "left running" in again.stdout, again.stdout + again.stderr
    assert ozwald.show("ozwald.service", "MainPID")["MainPID"] == pid
    assert ozwald.show("ozwald-hello.service", "InvocationID") == hello
    ozwald.wait_available("hello", 30)


def test_purge_leaves_nothing_running(ozwald: InstalledOzwald) -> None:
    assert ozwald.systemctl("is-active", "ozwald-hello.service", check=False).stdout.strip() == "active"
    status_code, body = ozwald.request("POST", "/srv/services/active/update/", [{"name": "hello"}, {"name": "lazy"}])
    assert status_code == 202, body
    ozwald.wait_for(lambda: ozwald.active().get("lazy", {}).get("status") == "idle", 60, "lazy to be idle")
    assert ozwald.systemctl("is-active", "ozwald-lazy.socket", check=False).stdout.strip() == "active"
    ozwald.purge()
    units = ozwald.sh("systemctl", "list-units", "--all", "--no-legend", "--plain", "ozwald*")
    running = [line for line in units.splitlines() if " active " in f" {line} " or "running" in line]
    assert running == [], units
    assert ozwald.sh("podman", "ps", "-q").strip() == ""
    for path in ("/etc/ozwald", "/var/lib/ozwald", "/usr/lib/systemd/system/ozwald.service"):
        assert not ozwald.host.guest_path(path).exists(), path
    assert list(ozwald.host.guest_path("/run/containers/systemd").glob("ozwald-*")) == []
    assert list(ozwald.host.guest_path("/run/systemd/system").glob("ozwald-*")) == []  # on-demand sockets, proxies
