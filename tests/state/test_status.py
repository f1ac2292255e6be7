# SPDX-License-Identifier: AGPL-3.0-or-later
import pytest
import redis

from ozwald.provisioner.models import ActiveService
from ozwald.state import StatusCache


def svc(name: str, status: str = "available", **info: object) -> ActiveService:
    return ActiveService.model_validate({"name": name, "service": "qwen1.5-vllm", "variety": "cpu-only",
                                         "profile": "no-gpu", "status": status, "info": info})


def test_round_trip(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    assert cache.read_all() == []
    b, a = svc("b", "starting", unit="ozwald-b.service"), svc("a", pid=42, ports=[8000])
    cache.write_many({"b": b, "a": a})
    assert cache.read_all() == [a, b]  # sorted by name
    assert cache.read("a") == a and cache.read("missing") is None
    assert redis_client.hlen("ozwald:local:status") == 2


def test_write_many_overwrites_only_the_given_entries(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    cache.write_many({"a": svc("a", "starting"), "b": svc("b")})
    cache.write_many({"a": svc("a", "failed", reason="exit 1")})
    assert [(s.name, s.status) for s in cache.read_all()] == [("a", "failed"), ("b", "available")]
    cache.write_many({})


def test_accepts_plain_dicts_and_validates_them(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    cache.write_many({"a": {"name": "a", "service": "s", "status": "stopping"}})
    assert cache.read("a") == ActiveService(name="a", service="s", status="stopping")
    with pytest.raises(ValueError, match="status"):
        cache.write_many({"b": {"name": "b", "service": "s", "status": "exploded"}})
    with pytest.raises(ValueError, match="describes instance 'a'"):
        cache.write_many({"b": svc("a")})


def test_remove(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    cache.write_many({"a": svc("a"), "b": svc("b")})
    assert cache.remove(["a", "zzz"]) == 1
    assert cache.remove([]) == 0
    assert [s.name for s in cache.read_all()] == ["b"]


def test_replace_all_drops_vanished_instances(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    cache.write_many({"a": svc("a"), "b": svc("b")})
    cache.replace_all({"c": svc("c")})
    assert [s.name for s in cache.read_all()] == ["c"]
    cache.replace_all({})
    assert cache.read_all() == []


def test_damaged_entry_is_skipped(redis_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    cache.write_many({"a": svc("a")})
    redis_client.hset("ozwald:local:status", "broken", "{not json")
    assert [s.name for s in cache.read_all()] == ["a"]


def test_provisioners_do_not_share_status(redis_client: redis.Redis) -> None:
    StatusCache(redis_client, "one").write_many({"a": svc("a")})
    assert StatusCache(redis_client, "two").read_all() == []
