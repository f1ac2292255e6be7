# SPDX-License-Identifier: AGPL-3.0-or-later
"""Host-port clashes: inside the desired set, and with what already listens on the host."""

from __future__ import annotations

import socket
from pathlib import Path

from ozwald.config import Settings
from ozwald.provisioner.ports import HostPort, host_listeners, port_conflicts, ports_in_unit_file, published_ports
from ozwald.records import DesiredInstance

SETTINGS = Settings.model_validate({"services": [
    {"name": "a", "image": "x", "ports": ["8100:8000"]},
    {"name": "b", "image": "x", "ports": ["127.0.0.1:8100:8000", "9000:9000/udp"]},
    {"name": "c", "image": "x", "ports": ["8000"]},
    {"name": "inner", "image": "x", "ports": [{"container": 8000}]},
]})


def ports(*names: str) -> dict[str, list[HostPort]]:
    return published_ports(SETTINGS, [DesiredInstance(name=n, service=n.rstrip("0123456789")) for n in names])


def test_two_instances_on_one_port_clash_naming_both() -> None:
    [clash] = port_conflicts(ports("a", "a2"), set(), set())
    assert clash.describe() == "port *:8100/tcp: published by both a and a2"
    assert clash.detail()["instances"] == ["a", "a2"]


def test_every_address_clashes_with_one_address_but_protocols_do_not_mix() -> None:
    [clash] = port_conflicts(ports("a", "b"), set(), set())
    assert clash.instances == ("a", "b") and clash.port == HostPort(8100, "tcp")
    assert port_conflicts({"x": [HostPort(9000, "tcp")], "y": [HostPort(9000, "udp")]}, set(), set()) == []
    two_addresses = {"x": [HostPort(80, "tcp", "127.0.0.1")], "y": [HostPort(80, "tcp", "10.0.0.1")]}
    assert port_conflicts(two_addresses, set(), set()) == []


def test_a_port_without_a_host_side_publishes_nothing() -> None:
    assert ports("inner") == {"inner": []}
    assert ports("c") == {"c": [HostPort(8000, "tcp")]}


def test_a_listener_on_the_host_clashes_unless_ozwald_holds_it() -> None:
    listening = {HostPort(8100, "tcp", "127.0.0.1")}
    [clash] = port_conflicts(ports("a"), listening, set())
    assert clash.describe() == ("port *:8100/tcp: a publishes it, but another process on the host "
                                "(127.0.0.1:8100/tcp) already listens on it")
    assert port_conflicts(ports("a"), listening, [HostPort(8100, "tcp")]) == []  # its own running container


def test_host_listeners_sees_a_real_listening_socket() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert HostPort(port, "tcp", "127.0.0.1") in host_listeners()
    assert HostPort(port, "tcp", "127.0.0.1") not in host_listeners()


def test_the_ports_a_rendered_unit_holds_are_read_back() -> None:
    from ozwald.provisioner.requests import effective_spec
    from ozwald.quadlet import render_unit

    unit = render_unit(effective_spec(SETTINGS, DesiredInstance(name="b", service="b")), "b")
    assert ports_in_unit_file(unit.text) == [HostPort(8100, "tcp", "127.0.0.1"), HostPort(9000, "udp")]
    inner = render_unit(effective_spec(SETTINGS, DesiredInstance(name="inner", service="inner")), "inner")
    assert ports_in_unit_file(inner.text) == []


def test_host_listeners_reads_every_family_and_skips_clients(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "tcp").write_text(header
                                  + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 0 0 1\n"
                                  + "   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 0 0 2\n")
    (tmp_path / "tcp6").write_text(header + "   0: 00000000000000000000000000000000:0050 "
                                   "00000000000000000000000000000000:0000 0A 0 0 0 0 0 3\n")
    (tmp_path / "udp").write_text(header + "   0: 00000000:14E9 00000000:0000 07 0 0 0 0 0 4\n"
                                  + "   1: 0100007F:9C40 0100007F:0035 01 0 0 0 0 0 5\n")
    assert host_listeners(tmp_path) == {HostPort(8080, "tcp", "127.0.0.1"), HostPort(80, "tcp"),
                                        HostPort(5353, "udp")}
