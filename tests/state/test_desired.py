# SPDX-License-Identifier: AGPL-3.0-or-later
"""The desired set: the state file is the truth, Redis a copy (ozwald/state/durable.py), on a real Redis.

A new `DesiredStateStore` on the same state directory is what a restarted provisioner builds, so "a
restart" below is a new store object; a Redis restart is a real one (it comes back empty).
"""

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ozwald.records import DesiredInstance, DesiredSet, UpdateError
from ozwald.state import DesiredStateStore, StateCorrupt, StateError
from ozwald.state.resp import Client
from tests.support.race import race
from tests.support.redis_server import RedisServer

KEY = "ozwald:local:desired"


def inst(name: str, variety: str | None = "cpu-only", profile: str | None = None) -> DesiredInstance:
    return DesiredInstance(name=name, service="svc", variety=variety, profile=profile)


def store(client: Client, state_dir: Path, name: str = "local") -> DesiredStateStore:
    return DesiredStateStore(client, name, state_dir)


def file_set(state_dir: Path, name: str = "local") -> DesiredSet:
    return DesiredSet.model_validate_json((state_dir / f"desired-{name}.json").read_text())


def redis_set(client: Client, key: str = KEY) -> DesiredSet | None:
    text = client.get(key)
    return DesiredSet.model_validate_json(text) if text is not None else None


@contextlib.contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    server.stop()
    try:
        yield
    finally:
        server.start()


def test_empty_store_reads_generation_zero(redis_client: Client, state_dir: Path) -> None:
    desired = store(redis_client, state_dir).read()
    assert desired == DesiredSet() and desired.generation == 0
    assert not (state_dir / "desired-local.json").exists()


def test_replace_numbers_each_set_and_writes_the_file_then_the_copy(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    before = datetime.now(UTC)
    first = s.replace([inst("a")])
    second = s.replace([inst("a"), inst("b", profile="fast")])
    third = s.replace([])
    assert [first.generation, second.generation, third.generation] == [1, 2, 3]
    assert second.updated_at is not None and second.updated_at >= before and second.updated_at.tzinfo is not None
    assert s.read() == third and s.read().instances == ()
    assert file_set(state_dir) == third
    # The Redis copy is a complete DesiredSet, readable by anything that speaks JSON.
    doc = json.loads(str(redis_client.get(KEY)))
    assert doc["generation"] == 3 and doc["instances"] == []
    path = state_dir / "desired-local.json"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]  # written by rename


def test_a_restart_keeps_the_set_and_its_generation_whatever_redis_holds(
        redis_client: Client, state_dir: Path) -> None:
    instance = DesiredInstance(name="q", service="qwen1.5-vllm", variety="nvidia", profile="fast-gpu",
                               variety_auto=True)
    written = store(redis_client, state_dir).replace([inst("a")])
    written = store(redis_client, state_dir).replace([instance])
    assert written.generation == 2
    redis_client.execute("FLUSHALL")  # Redis wiped while the provisioner was down
    again = store(redis_client, state_dir)
    assert again.read() == written and again.read().instances == (instance,)
    assert again.replace([inst("b")]).generation == 3  # no number is used twice


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
    assert s.read().generation == 0 and not s.path.exists()


def test_invalid_namespace_is_refused(redis_client: Client, state_dir: Path) -> None:
    with pytest.raises(ValueError, match="invalid name"):
        DesiredStateStore(redis_client, "../etc", state_dir)


def test_racing_threads_lose_no_update(redis_client: Client, state_dir: Path) -> None:
    """The API's threads post at once: every set gets its own generation, and the file and the copy end on
    the newest. A reader of the file sees whole documents whose generations never go back."""
    s = store(redis_client, state_dir)
    writers, per_writer = 4, 50
    results: dict[int, list[tuple[int, tuple[DesiredInstance, ...]]]] = {w: [] for w in range(writers)}
    done = threading.Event()
    observed: list[int] = []

    def writer(worker: int) -> None:
        for i in range(per_writer):
            instances = (inst(f"w{worker}-{i}"),)
            results[worker].append((s.replace(instances).generation, instances))

    def read_file() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                observed.append(file_set(state_dir).generation)

    reader = threading.Thread(target=read_file)
    reader.start()
    try:
        race(writer, writers)
    finally:
        done.set()
        reader.join(timeout=10)
    assigned = sorted(g for r in results.values() for g, _ in r)
    assert assigned == list(range(1, writers * per_writer + 1))  # every generation exactly once
    spans = [(min(g for g, _ in r), max(g for g, _ in r)) for r in results.values()]
    assert max(lo for lo, _ in spans) < min(hi for _, hi in spans), "the writers did not overlap: no race tested"
    newest = writers * per_writer
    by_generation = {g: instances for r in results.values() for g, instances in r}
    assert s.read().generation == newest and s.read().instances == by_generation[newest]
    assert file_set(state_dir) == s.read() == redis_set(redis_client)
    assert observed == sorted(observed), "the state file went back to an older generation"


def test_a_redis_restart_loses_nothing_and_the_copy_comes_back(
        redis_client: Client, state_dir: Path, restart_redis: Callable[[], None]) -> None:
    s = store(redis_client, state_dir)
    s.replace([inst("a")])
    latest = s.replace([inst("a"), inst("b")])
    restart_redis()
    assert redis_client.get(KEY) is None  # empty: the same client reconnects by itself
    assert s.read() == latest
    assert s.document.sync_cache() is True  # what the provisioner does every few seconds
    assert redis_set(redis_client) == latest
    assert s.replace([inst("c")]).generation == 3  # the sequence continues, no reuse of 1 and 2
    assert redis_set(redis_client) == s.read()


def test_with_redis_down_writes_and_reads_go_on(redis_client: Client, redis_server: RedisServer,
                                                state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    s.replace([inst("a")])
    with redis_down(redis_server):
        second = s.replace([inst("b")])
        assert second.generation == 2 and file_set(state_dir) == second == s.read()
        assert s.document.sync_cache() is False
        assert store(redis_client, state_dir).read() == second  # a restart with Redis down: the file
    assert redis_set(redis_client) is None  # it came back empty
    assert s.document.sync_cache() is True and redis_set(redis_client) == second


def test_numbers_go_on_above_a_newer_copy_and_the_file_wins(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    for i in range(3):
        s.replace([inst(f"i{i}")])
    newest = s.read()
    # A copy the file does not have (Redis restored from another host's dump, say): it is not taken for the
    # truth, but the next generation is above it, so no reader of the copy sees numbers go back.
    redis_client.set(KEY, DesiredSet(generation=9, instances=(inst("other"),)).model_dump_json())
    again = store(redis_client, state_dir)
    assert again.read() == newest
    assert again.replace([inst("next")]).generation == 10
    # An older copy is overwritten with the file's.
    redis_client.set(KEY, DesiredSet(generation=1, instances=(inst("stale"),)).model_dump_json())
    third = store(redis_client, state_dir)
    assert third.read().generation == 10
    assert third.document.sync_cache() and redis_set(redis_client) == third.read()


def test_a_lost_or_damaged_file_is_recovered_from_the_copy(redis_client: Client, state_dir: Path) -> None:
    latest = store(redis_client, state_dir).replace([inst("a")])
    (state_dir / "desired-local.json").unlink()
    assert store(redis_client, state_dir).read() == latest
    assert file_set(state_dir) == latest  # written back
    (state_dir / "desired-local.json").write_text("not json")
    assert store(redis_client, state_dir).read() == latest
    assert file_set(state_dir) == latest


def test_damage_with_no_good_copy_is_an_error_not_an_empty_set(redis_client: Client, state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "desired-local.json").write_text('{"generation": 4, "instances": [{"name": ')
    s = store(redis_client, state_dir)
    with pytest.raises(StateCorrupt, match=r"desired-local\.json"):
        s.read()
    # A new set replaces the damaged file: the orchestrator's way out.
    assert s.replace([inst("a")]).generation == 1
    assert file_set(state_dir).generation == 1
    # No file and a damaged copy: an error too.
    (state_dir / "desired-local.json").unlink()
    redis_client.set(KEY, '{"generation": "many"}')
    with pytest.raises(StateCorrupt, match="ozwald:local:desired"):
        store(redis_client, state_dir).read()


def test_a_file_that_cannot_be_written_changes_nothing(redis_client: Client, state_dir: Path) -> None:
    s = store(redis_client, state_dir)
    first = s.replace([inst("a")])
    path = state_dir / "desired-local.json"
    path.unlink()
    (path / "in-the-way").mkdir(parents=True)  # the rename onto it fails, as on a full or broken disk
    with pytest.raises(StateError, match=r"cannot save the desired set.*nothing was changed"):
        s.replace([inst("b")])
    assert s.read() == first and redis_set(redis_client) == first
    (path / "in-the-way").rmdir()
    path.rmdir()
    assert s.replace([inst("b")]).generation == 2 and file_set(state_dir) == s.read()
