# SPDX-License-Identifier: AGPL-3.0-or-later
"""`info` as a typed record keeps the wire format of the dict it replaced: the same keys in the same order,
a key set to null answered as null, a key never set left out, unknown keys kept; and it reads like that dict."""

from __future__ import annotations

import json

import pytest

from ozwald.records import ActiveService, PendingChange, ServiceInfo

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
