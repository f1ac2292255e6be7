# SPDX-License-Identifier: AGPL-3.0-or-later
"""The status writer against a real Redis: coalesced writes, the newest wins, nothing lost at stop, and a
lost Redis costs a warning, never the thread."""

import logging
import threading
import time

import pytest

from ozwald.config.model import RedisParameters
from ozwald.provisioner.status_writer import StatusWriter
from ozwald.records import ActiveService, Status
from ozwald.state import StatusCache, connect
from ozwald.state.resp import Client
from tests.support.redis_server import free_port


def fleet(status: Status, count: int = 100) -> list[ActiveService]:
    return [ActiveService(name=f"light{i}", service="light", status=status) for i in range(count)]


def test_a_burst_of_publishes_is_written_once_and_the_newest_wins(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    writer = StatusWriter(cache, settle=0.3)
    writer.start()
    try:
        for status in ("starting", "available", "stopping"):
            writer.offer(fleet(status))
        assert cache.read_all() == []  # not yet: the writer lets the woken answers go first
        assert writer.flush()
        assert writer.writes == 1
        assert cache.read_all() == sorted(fleet("stopping"), key=lambda s: s.name)
        writer.offer(fleet("starting", 3))
        assert writer.flush()
        assert writer.writes == 2
        assert [s.name for s in cache.read_all()] == ["light0", "light1", "light2"]
    finally:
        writer.stop()


def test_stop_writes_what_is_pending_at_once(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    writer = StatusWriter(cache, settle=30.0)
    writer.start()
    writer.offer(fleet("available", 2))
    began = time.monotonic()
    writer.stop()
    assert time.monotonic() - began < 10  # the stop cut the 30 s settle short
    assert [s.status for s in cache.read_all()] == ["available", "available"]


def test_without_a_thread_an_offer_is_written_in_the_callers_thread(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    writer = StatusWriter(cache)
    writer.offer(fleet("available", 1))
    assert writer.writes == 1 and [s.name for s in cache.read_all()] == ["light0"]


def test_a_lost_redis_costs_a_warning_not_the_writer(redis_client: Client,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    dead = StatusCache(connect(RedisParameters(port=free_port()), check=False, retries=0), "local")
    writer = StatusWriter(dead, settle=0.0)
    writer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ozwald.provisioner.status_writer"):
            writer.offer(fleet("available", 1))
            assert writer.flush()
        assert writer.writes == 0
        assert any("could not cache statuses" in r.getMessage() for r in caplog.records)
        writer.cache = StatusCache(redis_client, "local")  # Redis is back: the next publish is written
        writer.offer(fleet("starting", 1))
        assert writer.flush()
        assert writer.writes == 1 and [s.status for s in writer.cache.read_all()] == ["starting"]
        assert any(t.name == "ozwald-status-writer" for t in threading.enumerate())
    finally:
        writer.stop()
