# SPDX-License-Identifier: AGPL-3.0-or-later
import pytest
import redis

from ozwald.records import ActiveService
from ozwald.state import StatusCache
from ozwald.state.resp import Client


def svc(name: str, status: str = "available", **info: object) -> ActiveService:
    return ActiveService.model_validate({"name": name, "service": "qwen1.5-vllm", "variety": "cpu-only",
                                         "profile": "no-gpu", "status": status, "info": info})


def test_round_trip(redis_client: Client, reference_client: redis.Redis) -> None:
    cache = StatusCache(redis_client, "local")
    assert cache.read_all() == []
    b, a = svc("b", "starting", unit="ozwald-b.service"), svc("a", pid=42, ports=[8000])
    cache.replace_all({"b": b, "a": a})
    assert cache.read_all() == [a, b]  # sorted by name
    assert reference_client.hlen("ozwald:local:status") == 2


def test_accepts_plain_dicts_and_validates_them(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    cache.replace_all({"a": {"name": "a", "service": "s", "status": "stopping"}})
    assert cache.read_all() == [ActiveService(name="a", service="s", status="stopping")]
    with pytest.raises(ValueError, match="status"):
        cache.replace_all({"b": {"name": "b", "service": "s", "status": "exploded"}})
    with pytest.raises(ValueError, match="describes instance 'a'"):
        cache.replace_all({"b": svc("a")})
    assert [s.name for s in cache.read_all()] == ["a"]  # a refused replacement changes nothing


def test_replace_all_drops_vanished_instances(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    cache.replace_all({"a": svc("a"), "b": svc("b")})
    cache.replace_all({"c": svc("c")})
    assert [s.name for s in cache.read_all()] == ["c"]
    cache.replace_all({})
    assert cache.read_all() == []


def test_damaged_entry_is_skipped(redis_client: Client) -> None:
    cache = StatusCache(redis_client, "local")
    cache.replace_all({"a": svc("a")})
    redis_client.hset("ozwald:local:status", {"broken": "{not json"})
    assert [s.name for s in cache.read_all()] == ["a"]


def test_provisioners_do_not_share_status(redis_client: Client) -> None:
    StatusCache(redis_client, "one").replace_all({"a": svc("a")})
    assert StatusCache(redis_client, "two").read_all() == []
