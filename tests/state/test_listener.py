# SPDX-License-Identifier: AGPL-3.0-or-later
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ozwald.config.model import RedisParameters
from ozwald.records import DesiredInstance
from ozwald.state import DesiredStateStore, StateUnavailable, connect
from ozwald.state.resp import Client
from tests.support.redis_server import RedisServer, free_port


def inst(name: str) -> DesiredInstance:
    return DesiredInstance(name=name, service="svc")


def pair(redis_server: RedisServer, state_dir: Path) -> tuple[DesiredStateStore, DesiredStateStore]:
    """Two stores with their own clients: a change made through one reaches the other only via Redis."""
    return (DesiredStateStore(connect(redis_server.params()), "local", state_dir),
            DesiredStateStore(connect(redis_server.params()), "local", state_dir))


def test_wait_times_out_without_changes(redis_client: Client, state_dir: Path) -> None:
    store = DesiredStateStore(redis_client, "local", state_dir)
    store.replace([inst("a")])
    with store.subscribe() as listener:
        assert listener.generation == 1  # the baseline: changes before subscribe() are not reported
        start = time.monotonic()
        assert listener.wait(0.2) is None
        assert 0.15 < time.monotonic() - start < 1.0
        assert listener.connected


def test_change_from_another_client_wakes_the_listener(
    redis_client: Client, redis_server: RedisServer, state_dir: Path
) -> None:
    writer, reader = pair(redis_server, state_dir)
    with reader.subscribe() as listener:
        writer.replace([inst("a")])
        assert listener.wait(5) == 1
        assert reader.read().instances == (inst("a"),)


def test_bursts_coalesce_to_the_newest_generation(
    redis_client: Client, redis_server: RedisServer, state_dir: Path
) -> None:
    writer, reader = pair(redis_server, state_dir)
    with reader.subscribe() as listener:
        for i in range(5):
            writer.replace([inst(f"i{i}")])
        deadline = time.monotonic() + 5
        got = None
        while got != 5 and time.monotonic() < deadline:
            got = listener.wait(1)
        assert got == 5
        assert listener.wait(0.1) is None


def test_same_store_changes_arrive_without_redis(redis_client: Client, state_dir: Path) -> None:
    store = DesiredStateStore(redis_client, "local", state_dir)
    with store.subscribe() as listener:
        store.replace([inst("a")])
        assert listener.wait(0) == 1  # already delivered by the in-process hook


def test_other_provisioners_do_not_wake_it(redis_client: Client, redis_server: RedisServer,
                                           state_dir: Path) -> None:
    mine = DesiredStateStore(redis_client, "mine", state_dir)
    theirs = DesiredStateStore(connect(redis_server.params()), "theirs", state_dir)
    with mine.subscribe() as listener:
        theirs.replace([inst("a")])
        assert listener.wait(0.3) is None


def test_garbage_on_the_channel_is_ignored(redis_client: Client, state_dir: Path) -> None:
    store = DesiredStateStore(redis_client, "local", state_dir)
    with store.subscribe() as listener:
        redis_client.publish(store.channel, "not-a-number")
        redis_client.publish(store.channel, "7")
        assert listener.wait(5) == 7


def test_close_releases_a_blocked_waiter(redis_client: Client, state_dir: Path) -> None:
    listener = DesiredStateStore(redis_client, "local", state_dir).subscribe()
    out: list[int | None] = []
    waiter = threading.Thread(target=lambda: out.append(listener.wait(30)))
    waiter.start()
    time.sleep(0.05)
    start = time.monotonic()
    listener.close()
    waiter.join(timeout=5)
    assert out == [None] and time.monotonic() - start < 3
    assert listener.closed and not listener.connected
    listener.close()  # idempotent


def test_subscribe_to_dead_redis_is_unavailable(state_dir: Path) -> None:
    client = connect(RedisParameters(port=free_port()), check=False, retries=0)
    with pytest.raises(StateUnavailable):
        DesiredStateStore(client, "local", state_dir).subscribe()


def test_listener_survives_a_redis_restart(
    redis_client: Client, redis_server: RedisServer, state_dir: Path, restart_redis: Callable[[], None]
) -> None:
    writer, reader = pair(redis_server, state_dir)
    writer.replace([inst("a")])
    with reader.subscribe(poll_interval=0.1) as listener:
        restart_redis()
        # The change lands while the listener may still be reconnecting: the resync on resubscription
        # must catch it even if its pub/sub message was published before the subscription came back.
        assert writer.replace([inst("b")]).generation == 2
        assert listener.wait(10) == 2
        deadline = time.monotonic() + 10
        while not listener.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.connected
        writer.replace([inst("c")])
        assert listener.wait(5) == 3


def test_wake_up_latency(redis_client: Client, redis_server: RedisServer, state_dir: Path) -> None:
    _writer, reader = pair(redis_server, state_dir)
    publisher = connect(redis_server.params())
    latencies: list[float] = []
    with reader.subscribe() as listener:
        for generation in range(1, 101):
            start = time.perf_counter()
            publisher.publish(reader.channel, generation)
            assert listener.wait(1) == generation
            latencies.append(time.perf_counter() - start)
    latencies.sort()
    median, p90 = statistics.median(latencies), latencies[89]
    # Typically ~0.2 ms; the bounds leave room for a loaded CI machine, not for a polling delay.
    assert median < 0.01 and p90 < 0.05, f"wake-up median {median * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms"


def test_wake_up_latency_through_replace(redis_client: Client, redis_server: RedisServer,
                                         state_dir: Path) -> None:
    """From the start of replace() in one client to wait() returning in another: the reconciler's view."""
    writer, reader = pair(redis_server, state_dir)
    delays: list[float] = []
    with reader.subscribe() as listener:
        for i in range(20):
            result: list[int | None] = []

            def waiter() -> None:
                result.append(listener.wait(5))
                delays.append(time.perf_counter())

            thread = threading.Thread(target=waiter)
            thread.start()
            start = time.perf_counter()
            writer.replace([inst(f"i{i}")])
            thread.join(timeout=5)
            assert result == [i + 1]
            delays[-1] -= start
    median = statistics.median(delays)
    assert median < 0.05, f"replace-to-wake median {median * 1e3:.2f} ms"
