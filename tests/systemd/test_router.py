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

from jeepney import DBusAddress, MatchRule, Message, new_signal
from jeepney.io.common import FilterHandle
from jeepney.io.threading import ReceiveStopped

from ozwald.systemd.client import _Router

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
