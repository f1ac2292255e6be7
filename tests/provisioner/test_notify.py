# SPDX-License-Identifier: AGPL-3.0-or-later
"""sd_notify over a real datagram socket, and the provisioner's READY/WATCHDOG/STATUS/reload logic."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ozwald.process import ServiceManagerLink, status_line
from ozwald.provisioner.notify import Notifier, watchdog_interval

CONTRACT = Path(__file__).resolve().parents[2] / "contrib" / "examples" / "contract.yml"


def listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_notify_to_a_path_socket(tmp_path: Path) -> None:
    sock = listen(str(tmp_path / "notify"))
    assert Notifier(str(tmp_path / "notify")).send(ready=1, status="up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_to_an_abstract_socket() -> None:
    name = f"ozwald-test-{time.monotonic_ns()}"
    sock = listen("\0" + name)
    assert Notifier("@" + name).watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled and not Notifier().ready()


def test_watchdog_interval_only_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() == 20.0


def test_status_line_counts() -> None:
    services = [SimpleNamespace(status=s) for s in ("available", "available", "starting", "failed", "stopping")]
    assert status_line(services) == "5 instances: 2 available, 1 starting, 1 failed, 1 stopping"
    assert status_line([]) == "0 instances: 0 available, 0 starting, 0 failed"


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[dict[str, Any]] = []

    def send(self, **fields: str | int) -> bool:
        self.sent.append(fields)
        return True


def fake_provisioner() -> Any:
    reconciler = SimpleNamespace(first_pass_done=threading.Event(), heartbeat=time.monotonic(),
                                 bus_lost=threading.Event())
    replaced: list[Any] = []
    return SimpleNamespace(reconciler=reconciler, replaced=replaced, active_services=lambda: [],
                           replace_settings=replaced.append)


def identity(name: str = "local") -> Any:
    return SimpleNamespace(name=name)


def test_ready_only_after_the_first_pass_and_watchdog_only_while_the_loop_turns() -> None:
    prov = fake_provisioner()
    recorder = Recorder()
    link = ServiceManagerLink(prov, identity(), None, recorder, watchdog=0.4)
    link.start()
    try:
        time.sleep(0.3)
        assert not any("ready" in f for f in recorder.sent)
        prov.reconciler.first_pass_done.set()
        assert link.ready.wait(2)
        assert {"ready": 1} in recorder.sent
        assert any(f.get("status", "").startswith("0 instances") for f in recorder.sent)
        prov.reconciler.heartbeat = time.monotonic() - 60  # wedged: no more pings
        time.sleep(0.25)
        before = sum("watchdog" in f for f in recorder.sent)
        time.sleep(0.5)
        assert sum("watchdog" in f for f in recorder.sent) == before
    finally:
        link.stop()


def test_reload_keeps_old_settings_on_a_bad_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "ozwald.yml"
    bad.write_text(CONTRACT.read_text().replace("    type: container", "    type: container\n    imgae: x", 1))
    prov = fake_provisioner()
    recorder = Recorder()
    link = ServiceManagerLink(prov, identity(), str(bad), recorder)
    assert link.reload() is False
    assert prov.replaced == []
    assert f"{bad}:" in caplog.text and "imgae: unknown key" in caplog.text
    assert recorder.sent[0].get("reloading") == 1 and recorder.sent[-1].get("ready") == 1


def test_reload_swaps_in_valid_settings(tmp_path: Path) -> None:
    good = tmp_path / "ozwald.yml"
    good.write_text(CONTRACT.read_text())
    prov = fake_provisioner()
    link = ServiceManagerLink(prov, identity(), str(good), Recorder())
    assert link.reload() is True
    assert [s.name for s in prov.replaced[0].services] == ["qwen1.5-vllm", "fiction-sources"]


def test_reload_refuses_settings_without_this_provisioner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "ozwald.yml"
    good.write_text(CONTRACT.read_text())
    prov = fake_provisioner()
    link = ServiceManagerLink(prov, identity("elsewhere"), str(good), Recorder())
    assert link.reload() is False and prov.replaced == []
    assert "old settings kept" in caplog.text


def test_ozwalds_own_redis_unit_is_no_instance() -> None:
    from ozwald.config import parse_settings
    from ozwald.provisioner.requests import validate_requests
    from ozwald.records import ServiceRequest, UpdateError

    settings = parse_settings("services:\n  - name: redis\n    image: localhost/redis:latest\n")
    with pytest.raises(UpdateError) as caught:
        validate_requests(settings, [ServiceRequest(name="redis")])
    assert caught.value.field == "name" and "reserved" in caught.value.message
    assert validate_requests(settings, [ServiceRequest(name="cache", service="redis")])[0].name == "cache"
