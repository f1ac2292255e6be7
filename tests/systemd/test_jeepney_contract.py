# SPDX-License-Identifier: AGPL-3.0-or-later
"""What Ozwald relies on in jeepney beyond its public API; fails loudly when an upgrade changes it.

`ozwald.systemd.client._Router` overrides `DBusRouter._receiver` and `_dispatch` and reads `_replies`,
`_filters.filters` and `_rcv_thread`; `SystemdClient._call_pipelined` uses `_replies.catch` with
`conn.outgoing_serial`. pyproject pins jeepney to the range these tests passed on.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from concurrent.futures import Future
from importlib.metadata import version
from queue import Queue
from typing import Any

from jeepney import DBusAddress, HeaderFields, Message, MessageType, new_method_call, new_method_return
from jeepney.io.common import FilterHandle, MessageFilters, ReplyMatcher
from jeepney.io.threading import DBusRouter

from ozwald.systemd import protocol
from ozwald.systemd.client import SystemdClient, _Router
from tests.systemd.test_router import QueuedConnection


class FakeConnection(QueuedConnection):
    """Also records what is sent; the test decides when replies come in."""

    def __init__(self) -> None:
        super().__init__()
        self.outgoing_serial = itertools.count(start=1)
        self.sent: list[tuple[Message, int]] = []
        self.on_send: Any = None

    def send(self, message: Message, serial: int | None = None) -> None:
        assert serial is not None
        self.sent.append((message, serial))
        if self.on_send is not None:
            self.on_send()


def reply_to(message: Message, serial: int, props: dict[str, Any]) -> Message:
    message.header.serial = serial
    return new_method_return(message, "a{sv}", ({k: ("s", v) for k, v in props.items()},))


def test_jeepney_version_is_in_the_tested_range() -> None:
    major, minor = (int(part) for part in version("jeepney").split(".")[:2])
    assert (major, minor) in ((0, 8), (0, 9)), f"jeepney {version('jeepney')}: re-run these tests, then widen the pin"


def test_router_private_api_is_still_there() -> None:
    for name in ("_receiver", "_dispatch"):
        assert callable(getattr(DBusRouter, name, None)), f"jeepney DBusRouter.{name} is gone"
    assert "msg" in inspect.signature(DBusRouter._dispatch).parameters
    router = _Router(FakeConnection())
    try:
        assert isinstance(router._replies, ReplyMatcher)
        assert isinstance(router._filters, MessageFilters)
        assert isinstance(router._filters.filters, dict)
        assert isinstance(router._rcv_thread, threading.Thread) and router._rcv_thread.is_alive()
        for name in ("catch", "dispatch", "drop_all"):
            assert callable(getattr(router._replies, name, None)), f"jeepney ReplyMatcher.{name} is gone"
        with FilterHandle(router._filters, protocol.job_removed_rule(with_sender=False), Queue()) as _:
            [handle] = list(router._filters.filters.values())
            assert hasattr(handle, "rule") and hasattr(handle, "queue")
    finally:
        router.close()
    assert not router._rcv_thread.is_alive()


def test_a_caught_serial_gets_its_reply_through_the_receiver() -> None:
    connection = FakeConnection()
    router = _Router(connection)
    try:
        call = new_method_call(DBusAddress("/x", bus_name="org.example", interface="org.example.I"), "M")
        with router._replies.catch(7, Future()) as future:
            connection.incoming.put(reply_to(call, 7, {"A": "b"}))
            reply = future.result(timeout=10)
        assert reply.header.message_type is MessageType.method_return
    finally:
        router.close()


def test_pipelined_calls_are_all_sent_before_any_reply_is_awaited() -> None:
    connection = FakeConnection()
    client = object.__new__(SystemdClient)
    client.call_timeout = 5.0
    client._connection = connection
    client._router = _Router(connection)
    units = ["ozwald-a.service", "ozwald-b.service", "ozwald-c.service"]
    calls = [(protocol.get_all_properties(unit, protocol.ALL_IFACES), unit) for unit in units]

    def reply_once_all_are_sent() -> None:
        if len(connection.sent) == len(calls):  # a client that waited after each send would never get here
            for message, serial in reversed(connection.sent):
                unit = protocol.unit_name_from_path(str(message.header.fields[HeaderFields.path]))
                connection.incoming.put(reply_to(message, serial, {"Id": str(unit)}))

    connection.on_send = reply_once_all_are_sent
    try:
        ids = client._call_pipelined(calls, lambda unit, body: (unit, protocol.unwrap_properties(body)["Id"]))
    finally:
        client._router.close()
    assert [serial for _, serial in connection.sent] == [1, 2, 3]
    # each reply reached its own call, though they came back in reverse order
    assert ids == [(unit, unit) for unit in units]
    assert client._router._replies._futures == {}  # every waiter let go once its reply was taken
