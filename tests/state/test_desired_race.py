# SPDX-License-Identifier: AGPL-3.0-or-later
"""Two processes race 200 replaces each: the generation sequence must come out whole.

Processes, not threads, because the real writers are separate processes (API workers, the CLI) that
share only Redis and the state file; spawned rather than forked, so each child starts clean.
"""

import contextlib
import multiprocessing
import threading
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from ozwald.config.model import RedisParameters
from ozwald.records import DesiredInstance, DesiredSet
from ozwald.state import DesiredStateStore, connect
from ozwald.state.resp import Client
from tests.support.redis_server import RedisServer

PER_WRITER = 200


def _writer(worker: int, params: RedisParameters, state_dir: str, barrier: Barrier,
            results: "multiprocessing.Queue[Any]") -> None:
    store = DesiredStateStore(connect(params), "local", state_dir)
    out = []
    barrier.wait(timeout=30)
    for i in range(PER_WRITER):
        instances = (DesiredInstance(name=f"w{worker}-{i}", service="svc"),)
        out.append((store.replace(instances).generation, [x.model_dump() for x in instances]))
    results.put((worker, out))


def test_two_processes_racing_lose_no_update(redis_client: Client, redis_server: RedisServer,
                                             state_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results: multiprocessing.Queue[Any] = ctx.Queue()
    path = state_dir / "desired-local.json"
    observed: list[int] = []
    stop = threading.Event()

    def watch_file() -> None:
        # Any reader of the file, at any moment, must see a whole document whose generation never goes back.
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                observed.append(DesiredSet.model_validate_json(path.read_text()).generation)

    watcher = threading.Thread(target=watch_file)
    watcher.start()
    procs = [ctx.Process(target=_writer, args=(w, redis_server.params(), str(state_dir), barrier, results))
             for w in (0, 1)]
    try:
        for p in procs:
            p.start()
        collected = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        stop.set()
        watcher.join()
        for p in procs:
            if p.is_alive():
                p.kill()

    assigned = sorted(g for out in collected.values() for g, _ in out)
    assert assigned == list(range(1, 2 * PER_WRITER + 1)), "a generation was lost or assigned twice"
    spans = [(min(g for g, _ in out), max(g for g, _ in out)) for out in collected.values()]
    assert max(lo for lo, _ in spans) < min(hi for _, hi in spans), "the writers did not overlap: no race tested"
    by_generation = {g: instances for out in collected.values() for g, instances in out}
    final = DesiredStateStore(redis_client, "local", state_dir).read()
    assert final.generation == 2 * PER_WRITER
    assert [x.model_dump() for x in final.instances] == by_generation[final.generation]
    on_disk = DesiredSet.model_validate_json(path.read_text())
    assert on_disk == final
    assert observed == sorted(observed), "the state file went back to an older generation"
    assert observed, "the watcher never saw the file"
