# SPDX-License-Identifier: AGPL-3.0-or-later
"""The D-Bus router under the shared client: no message, and no other thread's filter, may end its receiver.

jeepney's own dispatch iterated the filter dict while other threads changed it; in a benchmark that
ended the receiver thread ("dictionary changed size during iteration") and the client with it.
The connection here is a stand-in that hands the router queued messages: the router is the part tested.
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    Message,
    new_error,
    new_method_return,
    new_signal,
)
from jeepney.io.common import FilterHandle
from jeepney.io.threading import ReceiveStopped

from ozwald.systemd.client import SystemdClient, _Router
from ozwald.systemd.errors import UnitNotFound

UNIT_PATH = "/org/freedesktop/systemd1/unit/ozwald_2da_2eservice"


class QueuedConnection:
    """Hands the router's receiver whatever the test puts in `incoming`; None ends it."""

    def __init__(self) -> None:
        self.incoming: Queue[Message | None] = Queue()

    def receive(self) -> Message:
        message = self.incoming.get()
        if message is None:
            raise ReceiveStopped
        return message

    def interrupt(self) -> None:
        self.incoming.put(None)

    def reset_interrupt(self) -> None:
        pass


def signal() -> Message:
    return new_signal(DBusAddress(UNIT_PATH, interface="org.freedesktop.DBus.Properties"), "PropertiesChanged")


class AddsAFilterWhileMatching:
    """A rule whose check registers another filter, as a job wait in another thread does at that instant."""

    def __init__(self, router: _Router) -> None:
        self.router = router
        self.added: list[FilterHandle] = []

    def matches(self, message: Any) -> bool:
        self.added.append(self.router.filter(MatchRule(type="signal")))
        return True


class Explodes:
    def __init__(self) -> None:
        self.called = threading.Event()

    def matches(self, message: Any) -> bool:
        self.called.set()
        raise KeyError("a reply that timed out meanwhile")


def test_a_filter_added_during_dispatch_neither_breaks_it_nor_the_receiver() -> None:
    connection = QueuedConnection()
    router = _Router(connection)
    try:
        adder = AddsAFilterWhileMatching(router)
        with router.filter(MatchRule(type="signal"), bufsize=10) as before, \
                FilterHandle(router._filters, adder, Queue(maxsize=10)) as racing:
            router._dispatch(signal())
            assert before.qsize() == 1 and racing.qsize() == 1
            assert len(adder.added) == 1
            connection.incoming.put(signal())
            assert racing.get(timeout=10) is not None  # the receiver thread still runs and delivers
        assert router._rcv_thread.is_alive()
    finally:
        router.close()


def test_a_message_that_cannot_be_dispatched_is_dropped_and_the_next_one_delivered() -> None:
    connection = QueuedConnection()
    router = _Router(connection)
    try:
        explodes = Explodes()
        with FilterHandle(router._filters, explodes, Queue(maxsize=1)):
            connection.incoming.put(signal())
            assert explodes.called.wait(10)
        with router.filter(MatchRule(type="signal"), bufsize=1) as delivered:
            connection.incoming.put(signal())
            assert delivered.get(timeout=10).header.fields
        assert router._rcv_thread.is_alive()
    finally:
        router.close()


def test_close_still_ends_the_receiver() -> None:
    router = _Router(QueuedConnection())
    router.close()
    assert not router._rcv_thread.is_alive()


class SystemdStandIn(QueuedConnection):
    """Answers StartUnit and ResetFailedUnit like systemd: a job path, or NoSuchUnit for `missing` units."""

    def __init__(self, missing: set[str]) -> None:
        super().__init__()
        self.missing = missing
        self.outgoing_serial = iter(range(1, 1000))
        self.sent: list[tuple[str, str]] = []

    def send(self, message: Message, serial: int | None = None) -> None:
        self.incoming.put(self.answer(message, serial))

    def answer(self, message: Message, serial: int | None) -> Message:
        unit = message.body[0]
        self.sent.append((message.header.fields[HeaderFields.member], unit))
        if unit in self.missing:
            reply = new_error(message, "org.freedesktop.systemd1.NoSuchUnit", "s", (f"Unit {unit} not loaded.",))
        elif message.header.fields[HeaderFields.member] == "StartUnit":
            reply = new_method_return(message, "o", (f"/org/freedesktop/systemd1/job/{len(self.sent)}",))
        else:
            reply = new_method_return(message)
        reply.header.fields[HeaderFields.reply_serial] = serial
        return reply


def test_enqueue_and_reset_failed_units_answer_per_unit() -> None:
    connection = SystemdStandIn(missing={"b.service"})
    client = SystemdClient.__new__(SystemdClient)  # no bus: the router runs over the stand-in
    client.call_timeout, client.calls = 10.0, 0
    client._connection, client._router = connection, _Router(connection)
    try:
        queued = client.enqueue("start", ["a.service", "b.service", "c.service"])
        assert queued["a.service"] == "/org/freedesktop/systemd1/job/1"
        assert queued["c.service"] == "/org/freedesktop/systemd1/job/3"
        assert isinstance(queued["b.service"], UnitNotFound)
        refused = client.reset_failed_units(["a.service", "b.service"])
        assert list(refused) == ["b.service"]
        assert [m for m, _ in connection.sent] == ["StartUnit"] * 3 + ["ResetFailedUnit"] * 2
        assert client.calls == 5
    finally:
        client._router.close()


class SlowSystemdStandIn(SystemdStandIn):
    """Answers each call 50 ms later, and notes how many answers had gone out when each call was sent."""

    def __init__(self) -> None:
        super().__init__(missing=set())
        self.answered = 0
        self.answered_at_send: list[int] = []

    def send(self, message: Message, serial: int | None = None) -> None:
        self.answered_at_send.append(self.answered)
        reply = self.answer(message, serial)

        def answer_later() -> None:
            self.answered += 1
            self.incoming.put(reply)

        threading.Timer(0.05, answer_later).start()


def test_enqueue_sends_each_job_once_the_one_before_was_answered() -> None:
    """As systemctl does: 100 jobs queued in one burst made every health-checked `podman rm` hang."""
    connection = SlowSystemdStandIn()
    client = SystemdClient.__new__(SystemdClient)
    client.call_timeout, client.calls = 10.0, 0
    client._connection, client._router = connection, _Router(connection)
    try:
        queued = client.enqueue("start", ["a.service", "b.service", "c.service"])
        assert list(queued) == ["a.service", "b.service", "c.service"]
        assert connection.answered_at_send == [0, 1, 2]
    finally:
        client._router.close()
