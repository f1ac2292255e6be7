# SPDX-License-Identifier: AGPL-3.0-or-later
"""Batched unit reads against the real systemd of a test host.

`SystemdClient.list_units` reads each unit with one GetAll over every interface (an empty interface
name), pipelined. This checks, on real systemd, that the result equals what separate GetAll calls on the
Unit and Service interfaces gave, and counts the D-Bus calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ozwald.systemd import SystemdClient, protocol
from tests.integration.driver_kit import Drivers, drivers_for, server, settings_for
from tests.testhost.harness import TestHost


@pytest.fixture(scope="module")
def drivers(testhost: TestHost) -> Iterator[Drivers]:
    with drivers_for(testhost) as kit:
        yield kit


def _two_interface_state(client: SystemdClient, unit: str) -> protocol.UnitState:
    """The former read: GetAll(Unit), then GetAll(Service) for a loaded service."""
    unit_props = protocol.unwrap_properties(client._call(protocol.get_all_properties(unit, protocol.UNIT_IFACE)))
    service_props: dict[str, Any] = {}
    if unit.endswith(".service") and unit_props.get("LoadState") == "loaded":
        service_props = protocol.unwrap_properties(
            client._call(protocol.get_all_properties(unit, protocol.SERVICE_IFACE)))
    return protocol.unit_state(unit, unit_props, service_props)


def test_list_units_reads_every_interface_in_one_pipelined_call_per_unit(drivers: Drivers,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(server("reads-running"), server("reads-idle"),
                            server("reads-failed", environment={"CRASH_AFTER_S": "0.1"}))
    for name in ("reads-running", "reads-idle", "reads-failed"):
        drivers.install(settings, name)
    client = drivers.systemd
    client.start_unit("ozwald-reads-running.service", timeout=60)
    client.start(["ozwald-reads-failed.service"], timeout=60)
    client.wait_for("ozwald-reads-failed.service", lambda s: s.active_state in ("failed", "inactive"), 60)

    props = protocol.unwrap_properties(client._call(protocol.get_all_properties(
        "ozwald-reads-running.service", protocol.ALL_IFACES)))
    assert {"LoadState", "ActiveState", "InvocationID", "NRestarts", "ExecMainStatus", "MainPID"} <= set(props)

    sent: list[Any] = []
    original = client._router.conn.send

    def counting(message: Any, *args: Any, **kw: Any) -> Any:
        sent.append(message)
        return original(message, *args, **kw)

    monkeypatch.setattr(client._router.conn, "send", counting)
    batched = client.list_units("ozwald-reads-*")
    monkeypatch.undo()
    names = [state.name for state in batched]
    assert {"ozwald-reads-running.service", "ozwald-reads-failed.service"} <= set(names)
    assert len(sent) == 1 + len(batched)  # ListUnitsByPatterns, then one GetAll per unit (was 1 + 2N)
    assert [_two_interface_state(client, name) for name in names] == batched
    for name in (*names, "ozwald-reads-idle.service", "ozwald-never-installed.service"):
        assert client.unit_state(name) == _two_interface_state(client, name)
    drivers.systemd.stop(["ozwald-reads-running.service"], timeout=60)
    drivers.systemd.reset_failed("ozwald-reads-failed.service")
    drivers.remove("reads-running", "reads-idle", "reads-failed")
