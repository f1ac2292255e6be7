# SPDX-License-Identifier: AGPL-3.0-or-later
"""`info` as a typed record keeps the wire format of the dict it replaced: the same keys in the same order,
a key set to null answered as null, a key never set left out, unknown keys kept; and it reads like that dict."""

from __future__ import annotations

import json

import pytest

from ozwald.records import ActiveService, NudgeWait, PendingChange, ServiceInfo

# What the provisioner answered when `info` was a dict: one of each shape status.py writes.
ANSWERS = [
    '{"name":"a","service":"llm","variety":"cpu","profile":null,"status":"starting","properties":{},"info":'
    '{"unit":"ozwald-a.service","generation":3,"spec_hash":"n","variety_chosen":"cpu (picked for this host)",'
    '"active_state":"active","sub_state":"running","since":"2026-01-01T00:00:00+00:00","restarts":0,'
    '"running_spec_hash":"o","pending":{"variety":"cpu","profile":"large","spec_hash":"n","job":"restart"}}}',
    '{"name":"a","service":"llm","variety":null,"profile":null,"status":"available","properties":{},"info":'
    '{"unit":"ozwald-a.service","generation":3,"spec_hash":"n","running_spec_hash":"n","container_id":null,'
    '"invocation":"ab"}}',
    '{"name":"b","service":"llm","variety":null,"profile":null,"status":"failed","properties":{},"info":'
    '{"unit":"ozwald-b.service","generation":3,"spec_hash":"n","running_spec_hash":null,'
    '"reason":"exited 3 after 0.4 s","result":"exit-code","exit_status":3}}',
    '{"name":"docs","service":"docs","variety":null,"profile":null,"status":"available","properties":{},'
    '"info":{"unit":null,"generation":1,"reason":"source-files: a resource, not a container"}}',
    '{"name":"c","service":"llm","variety":null,"profile":null,"status":"starting","properties":{},"info":'
    '{"unit":"ozwald-c.service","restarting":true,"reason":"restarting after a crash","added_later":[1,2]}}',
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_wire_format_is_that_of_the_dict(answer: str) -> None:
    service = ActiveService.model_validate_json(answer)
    assert isinstance(service.info, ServiceInfo)
    assert service.model_dump_json() == answer  # byte for byte: keys, order, nulls
    assert service.model_dump(mode="json") == json.loads(answer)


def test_info_reads_like_the_dict_it_was() -> None:
    info = ActiveService.model_validate_json(ANSWERS[1]).info
    assert info.get("invocation") == "ab" and info["invocation"] == "ab" and info.invocation == "ab"
    assert "container_id" in info and info.get("container_id") is None  # set to null: present
    assert "reason" not in info and info.get("reason", "") == "" and info.reason is None  # never set: absent
    with pytest.raises(KeyError):
        info["pending"]
    assert info == json.loads(ANSWERS[1])["info"]
    started = ActiveService.model_validate_json(ANSWERS[0]).info
    assert isinstance(started.pending, PendingChange) and started.pending.job == "restart"
    assert started["pending"] == {"variety": "cpu", "profile": "large", "spec_hash": "n", "job": "restart"}


def test_a_key_set_to_null_and_a_key_never_set_differ() -> None:
    assert ServiceInfo(unit="u", container_id=None) != ServiceInfo(unit="u")
    assert ServiceInfo(unit="u").model_dump() == {"unit": "u"}


# -- NudgeWait: when a wait on a wake or a sleep is over -------------------------------------------------

def _chat(status: str, since: str | None = None, invocation: str | None = None) -> list[ActiveService]:
    return [ActiveService.model_validate({"name": "chat", "service": "llm", "status": status,
                                          "info": {"since": since, "invocation": invocation}}),
            ActiveService(name="other", service="llm", status="failed")]


@pytest.mark.parametrize(("operation", "statuses", "over"), [
    ("wake", ["idle", "starting", "available"], [False, False, True]),
    ("sleep", ["available", "stopping", "idle"], [False, False, True]),
    ("wake", ["idle", "failed"], [False, True]),
    ("sleep", ["idle"], [True]),  # already there
    ("wake", ["stopping", "idle", "starting"], [False, False, False]),
])
def test_a_nudge_wait_ends_at_the_target_or_a_failure(operation: str, statuses: list[str], over: list[bool]) -> None:
    wait = NudgeWait.before("chat", operation, _chat("idle"))  # type: ignore[arg-type]
    assert [wait.see(_chat(status))[1] for status in statuses] == over


def test_the_failure_before_a_wake_ends_it_only_once_left_or_failed_anew() -> None:
    before = _chat("failed", since="t1", invocation="i1")
    wait = NudgeWait.before("chat", "wake", before)
    assert wait.see(before) == (before[0], False)
    assert wait.see(_chat("failed", since="t2", invocation="i2"))[1]  # a new failure, its `starting` unseen
    wait = NudgeWait.before("chat", "wake", before)
    assert not wait.see(_chat("starting"))[1]
    assert wait.see(before)[1]  # failed again after leaving it, even if systemd's fields read the same


def test_an_instance_not_yet_in_the_statuses_is_waited_for() -> None:
    wait = NudgeWait.before("chat", "wake", [])
    assert wait.see([]) == (None, False)
    assert wait.see(_chat("available"))[1]
