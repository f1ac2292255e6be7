# SPDX-License-Identifier: AGPL-3.0-or-later
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ozwald.config.model import RedisParameters
from ozwald.records import DesiredInstance, DesiredSet, UpdateError
from ozwald.state import DesiredStateStore, StateCorrupt, StateError, StateUnavailable, connect
from ozwald.state.resp import Client
from tests.support.redis_server import RedisServer, free_port


def inst(name: str, variety: str | None = "cpu-only", profile: str | None = None) -> DesiredInstance:
    return DesiredInstance(name=name, service="svc", variety=variety, profile=profile)


def store(client: Client, state_dir: Path, name: str = "local") -> DesiredStateStore:
    return DesiredStateStore(client, name, state_dir)


def file_set(state_dir: Path, name: str = "local") -> DesiredSet:
    return DesiredSet.model_validate_json((state_dir / f"desired-{name}.json").read_text())


def test_empty_store_reads_generation_zero(redis_client: Client, state_dir: Path) -> None:
    desired = store(redis_client, state_dir).read()
    assert desired == DesiredSet() and desired.generation == 0
    assert not (state_dir / "desired-local.json").exists()


def test_replace_increments_generation_and_writes_redis_and_file(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    before = datetime.now(UTC)
    first = s.replace([inst("a")])
    second = s.replace([inst("a"), inst("b", profile="fast")])
    third = s.replace([])
    assert [first.generation, second.generation, third.generation] == [1, 2, 3]
    assert second.updated_at is not None and second.updated_at >= before and second.updated_at.tzinfo is not None
    assert s.read() == third and s.generation() == 3
    assert s.read().instances == ()
    assert file_set(state_dir) == third
    # The Redis document is a complete DesiredSet, readable by anything that speaks JSON.
    doc = json.loads(str(redis_client.get("ozwald:local:desired")))
    assert doc["generation"] == 3 and doc["instances"] == []
    assert redis_client.get("ozwald:local:generation") == "3"


def test_round_trip_keeps_every_field(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    instance = DesiredInstance(name="q", service="qwen1.5-vllm", variety="nvidia", profile="fast-gpu",
                               variety_auto=True)
    written = s.replace([instance])
    assert s.read().instances == (instance,)
    assert store(redis_client, state_dir).read() == written
    assert file_set(state_dir).instances == (instance,)


def test_provisioners_are_namespaced(redis_client: Client, state_dir: Path) -> None:
    one, two = store(redis_client, state_dir, "one"), store(redis_client, state_dir, "two")
    one.replace([inst("a")])
    one.replace([inst("b")])
    assert two.read().generation == 0
    assert two.replace([inst("c")]).generation == 1
    assert one.read().instances == (inst("b"),)
    assert file_set(state_dir, "one").generation == 2 and file_set(state_dir, "two").generation == 1


def test_duplicate_instance_names_are_refused(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    with pytest.raises(UpdateError) as caught:
        s.replace([inst("a"), inst("b"), inst("a")])
    assert caught.value.index == 2 and caught.value.field == "name"
    assert s.generation() == 0


def test_invalid_namespace_is_refused(redis_client: Client, state_dir: Path) -> None:
    with pytest.raises(ValueError, match="invalid name"):
        DesiredStateStore(redis_client, "../etc", state_dir)


def test_redis_restarted_empty_is_restored_from_file(
    redis_client: Client, state_dir: Path, restart_redis: Callable[[], None]
) -> None:
    s = store(redis_client, state_dir)
    s.replace([inst("a")])
    latest = s.replace([inst("a"), inst("b")])
    restart_redis()
    assert redis_client.get("ozwald:local:desired") is None  # the same client reconnects by itself
    assert s.read() == latest
    assert redis_client.get("ozwald:local:generation") == "2"
    assert s.replace([inst("c")]).generation == 3  # the sequence continues, no reuse of 1 and 2


def test_replace_after_empty_restart_continues_from_file_without_read(
    redis_client: Client, state_dir: Path, restart_redis: Callable[[], None]
) -> None:
    s = store(redis_client, state_dir)
    for i in range(5):
        s.replace([inst(f"i{i}")])
    restart_redis()
    assert s.replace([inst("new")]).generation == 6
    assert file_set(state_dir).generation == 6


def test_restore_never_overwrites_a_newer_redis_generation(redis_client: Client, tmp_path: Path) -> None:
    here, elsewhere = store(redis_client, tmp_path / "here"), store(redis_client, tmp_path / "elsewhere")
    here.replace([inst("old")])
    newest = elsewhere.replace([inst("new")])  # generation 2, written through another state dir
    assert file_set(tmp_path / "here").generation == 1
    assert here.read() == newest  # Redis wins over the older local file...
    assert file_set(tmp_path / "here") == newest  # ...and the local copy catches up


def test_newer_file_replaces_an_older_redis_copy(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    for i in range(3):
        s.replace([inst(f"i{i}")])
    newest = s.read()
    # Redis lost writes (e.g. restored from an old dump): generation 1 in Redis, 3 on disk.
    stale = DesiredSet(generation=1, instances=(inst("stale"),))
    redis_client.set("ozwald:local:desired", stale.model_dump_json())
    redis_client.set("ozwald:local:generation", 1)
    assert s.read() == newest
    assert s.generation() == 3


def test_file_never_regresses(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    for i in range(5):
        s.replace([inst(f"i{i}")])
    older = DesiredSet(generation=3, instances=(inst("older"),))
    assert s.save_local(older) is False
    assert s.save_local(s.read()) is False  # same generation: nothing to do
    assert file_set(state_dir).generation == 5
    assert s.save_local(DesiredSet(generation=6)) is True


def test_file_is_written_atomically_and_readable(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    s.replace([inst("a")])
    path = state_dir / "desired-local.json"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
    assert s.read_local() == s.read()


def test_corrupt_file_with_empty_redis_is_an_error_not_an_empty_set(redis_client: Client, state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "desired-local.json").write_text('{"generation": 4, "instances": [{"name": ')
    s = store(redis_client, state_dir)
    with pytest.raises(StateCorrupt, match=r"desired-local\.json"):
        s.read()
    # A new replace starts over and replaces the damaged file.
    assert s.replace([inst("a")]).generation == 1
    assert file_set(state_dir).generation == 1


def test_corrupt_file_is_rewritten_from_redis(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    latest = s.replace([inst("a")])
    (state_dir / "desired-local.json").write_text("not json")
    assert s.read() == latest
    assert file_set(state_dir) == latest


def test_corrupt_redis_document_is_an_error(redis_client: Client, state_dir: Path) -> None:
    redis_client.set("ozwald:local:desired", '{"generation": "many"}')
    with pytest.raises(StateCorrupt, match="ozwald:local:desired"):
        store(redis_client, state_dir).read()


def test_redis_down_is_state_unavailable(state_dir: Path) -> None:
    client = connect(RedisParameters(port=free_port()), check=False, retries=0)
    s = store(client, state_dir)
    with pytest.raises(StateUnavailable):
        s.read()
    with pytest.raises(StateUnavailable):
        s.replace([inst("a")])


def test_file_write_failure_after_redis_commit_is_reported(redis_client: Client, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    s = store(redis_client, blocker / "state")
    seen: list[int] = []
    s.add_listener(lambda d: seen.append(d.generation))
    with pytest.raises(StateError, match="live in Redis but was not saved"):
        s.replace([inst("a")])
    assert s.generation() == 1 and seen == [1]  # the change is live: listeners still hear of it


def test_in_process_listeners(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    seen: list[DesiredSet] = []

    def broken(_: DesiredSet) -> None:
        raise RuntimeError("listener bug")

    s.add_listener(broken)
    remove = s.add_listener(seen.append)
    first = s.replace([inst("a")])  # a failing listener neither fails the update nor starves the others
    remove()
    s.replace([inst("b")])
    assert seen == [first]


def test_concurrent_replaces_in_threads(redis_client: Client, redis_server: RedisServer, state_dir: Path) -> None:
    per_thread = 200
    results: dict[int, list[tuple[int, tuple[DesiredInstance, ...]]]] = {0: [], 1: []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            s = DesiredStateStore(connect(redis_server.params()), "local", state_dir)
            barrier.wait()
            for i in range(per_thread):
                instances = (inst(f"w{worker}-{i}"),)
                results[worker].append((s.replace(instances).generation, instances))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assigned = sorted(g for r in results.values() for g, _ in r)
    assert assigned == list(range(1, 2 * per_thread + 1))  # every generation exactly once: none lost, none shared
    for r in results.values():
        generations = [g for g, _ in r]
        assert generations == sorted(generations)  # strictly increasing as seen by each writer
    by_generation = {g: instances for r in results.values() for g, instances in r}
    final = store(redis_client, state_dir).read()
    assert final.generation == 2 * per_thread
    assert final.instances == by_generation[2 * per_thread]
    assert file_set(state_dir) == final


def test_replace_latency(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    instances = [inst(f"i{i}") for i in range(10)]
    s.replace(instances)
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        s.replace(instances)
        samples.append(time.perf_counter() - start)
    samples.sort()
    median = samples[len(samples) // 2]
    assert median < 0.1, f"replace median {median * 1000:.1f} ms"  # Redis round trip + an fsynced file
