# SPDX-License-Identifier: AGPL-3.0-or-later
"""The socket and proxy units beside an on-demand `.container` (its own text is a golden file, checked by the
real generator: tests/quadlet/test_golden.py)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ozwald.config import Settings, parse_settings, resolve
from ozwald.files import write_fifo
from ozwald.quadlet import RenderError, render_unit
from ozwald.quadlet.naming import swap_gate
from ozwald.quadlet.on_demand import SOCKET_PROXYD, knock_address, render_swap_gate
from tests.quadlet.cases import ON_DEMAND


def _lines(text: str) -> set[str]:
    return set(text.splitlines())


def test_the_socket_listens_on_the_public_port_and_starts_the_proxy() -> None:
    unit = render_unit(resolve(ON_DEMAND, "chat"), "chat")
    assert unit.on_demand is not None
    socket, proxy = unit.companions
    assert (socket.filename, proxy.filename) == ("ozwald-chat.socket", "ozwald-chat:proxy.service")
    assert {"[Socket]", "ListenStream=0.0.0.0:8090", "Service=ozwald-chat:proxy.service"} <= _lines(socket.text)
    assert "[Install]" not in socket.text and socket.wanted_by is None
    assert {f"ExecStart={SOCKET_PROXYD} --exit-idle-time=90s 127.0.0.1:18090", "Wants=ozwald-chat.service",
            "After=ozwald-chat.service", "PartOf=ozwald-chat.service", "StartLimitIntervalSec=0"} <= _lines(proxy.text)
    assert "Requires=" not in proxy.text  # a container that cannot start must not fail the proxy (README)


def test_the_proxy_not_the_container_clears_the_start_counter_of_a_container_that_is_up() -> None:
    """Off the first request's path: the proxy serves while its ExecStartPost runs; the container's would delay
    its `active` (README, bench/README.md)."""
    unit = render_unit(resolve(ON_DEMAND, "chat"), "chat")
    _, proxy = unit.companions
    assert ("ExecStartPost=-/bin/sh -c '/usr/bin/systemctl is-active -q ozwald-chat.service "
            "&& exec /usr/bin/systemctl reset-failed ozwald-chat.service'") in _lines(proxy.text)
    assert "ExecStartPost" not in unit.text and "reset-failed" not in unit.text


def test_the_container_publishes_on_loopback_and_stops_when_unneeded() -> None:
    unit = render_unit(resolve(ON_DEMAND, "chat"), "chat")
    lines = _lines(unit.text)
    assert {"PublishPort=127.0.0.1:18090:8000/tcp", "StopWhenUnneeded=yes", "Restart=no"} <= lines
    assert not any(line.startswith("PublishPort=0.0.0.0") for line in lines)


def test_persistent_brings_back_the_socket_not_the_container() -> None:
    unit = render_unit(resolve(ON_DEMAND, "chat", None, "persistent"), "chat")
    socket, _ = unit.companions
    assert socket.wanted_by == "sockets.target" and "WantedBy=sockets.target" in socket.text
    assert "[Install]" not in unit.text


def test_a_plain_service_has_no_companions() -> None:
    settings = parse_settings("services:\n  - name: s\n    image: x\n    ports: ['8090:8000']\n")
    unit = render_unit(resolve(settings, "s"), "s")
    assert unit.companions == () and "StopWhenUnneeded" not in unit.text


def test_settings_check_config_would_refuse_cannot_be_rendered() -> None:
    settings = Settings.model_validate({"services": [{"name": "s", "image": "x", "on_demand": True,
                                                      "ports": ["8090:8000", "9000:9000"]}]})
    with pytest.raises(RenderError, match="service 's': an on-demand service needs exactly one published TCP port"):
        render_unit(resolve(settings, "s"), "s")


@pytest.mark.parametrize(("port", "address"), [
    ("8090:8000", ("127.0.0.1", 8090)), ("0.0.0.0:8090:8000", ("127.0.0.1", 8090)),
    ("[::]:8090:8000", ("::1", 8090)), ("10.0.0.5:8090:8000", ("10.0.0.5", 8090)),
])
def test_a_wake_knocks_where_this_host_reaches_the_socket(port: str, address: tuple[str, int]) -> None:
    settings = parse_settings(f"services:\n  - name: s\n    image: x\n    ports: ['{port}']\n    on_demand: true\n")
    unit = render_unit(resolve(settings, "s"), "s")
    assert unit.on_demand is not None and knock_address(unit.on_demand.public) == address


def test_the_swap_gate_holds_a_start_until_a_line_is_written_to_its_fifo() -> None:
    """The gate's own shell command, run for real: it makes its FIFO, blocks, and ends once Ozwald writes."""
    instance = f"gate-test-{os.getpid()}"
    gate = render_swap_gate(instance, ("other",))
    assert gate.filename == f"ozwald-{instance}.service.d/50-ozwald-swap.conf"
    [line] = [ln for ln in gate.text.splitlines() if ln.startswith("ExecStartPre=")]
    program, script = shlex.split(line.removeprefix("ExecStartPre="))[0], shlex.split(line)[-1]
    fifo = Path(swap_gate(instance))
    assert not write_fifo(str(fifo), "go")  # no gate: nothing written, no error
    process = subprocess.Popen([program, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not write_fifo(str(fifo), "go"):  # until its shell has opened the FIFO
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert process.wait(timeout=10) == 0
        assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_IMODE(fifo.stat().st_mode) == 0o600
        assert not write_fifo(str(fifo), "go")  # the start went on: nobody reads any longer
    finally:
        process.kill()
        fifo.unlink(missing_ok=True)
