# SPDX-License-Identifier: AGPL-3.0-or-later
"""api/openapi.yaml cannot drift from the code: each named schema against the model that produces or reads
it, field by field: the same fields, the same JSON types, the same required ones, and extra keys allowed
exactly where the model allows them. (The routes and live answers are checked in test_openapi.py.)"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ozwald.client import (
    ConfiguredService,
    HealthStatus,
    ProfileAccepted,
    ProfileQueueEntry,
    ProfileResultRecord,
    UpdateAccepted,
)
from ozwald.records import (
    ActiveService,
    NudgeAccepted,
    OnDemandInfo,
    PendingChange,
    PlanEntry,
    ServiceInfo,
    ServiceRequest,
    _Details,
)
from ozwald.resources.views import AvailableResource, GpuSummary, HostResources, VendorSummary
from ozwald.state.profile_results import ProfileResult
from ozwald.state.profiles import ProfileRequest, ProfileRequestBody

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "api" / "openapi.yaml").read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]

# schema name -> (model, fields the API adds to the model's when it answers, fields the model has that the
# API never shows)
PAIRS: dict[str, tuple[Any, dict[str, set[str]], set[str]]] = {
    "ServiceRequest": (ServiceRequest, {}, set()),
    "ServiceInformation": (ActiveService, {}, set()),
    "ServiceInfo": (ServiceInfo, {}, set()),
    "PendingChange": (PendingChange, {}, set()),
    "OnDemandInfo": (OnDemandInfo, {}, set()),
    "NudgeAccepted": (NudgeAccepted, {}, set()),
    "PlanEntry": (PlanEntry, {}, set()),
    "UpdateAccepted": (UpdateAccepted, {}, set()),
    "HostResources": (HostResources, {}, set()),
    "GpuSummary": (GpuSummary, {}, set()),
    "VendorSummary": (VendorSummary, {}, set()),
    "AvailableResource": (AvailableResource, {}, set()),
    # The queue's entries: the stored request plus where it stands (ProfileQueue.list).
    "ProfileRequest": (ProfileRequest, {"position": {"integer"}, "state": {"string"}, "progress": {"object"}},
                       {"phase", "phase_since"}),
    "ProfileRequestBody": (ProfileRequestBody, {}, set()),
    # A result plus whether the settings changed since (result_json).
    "ProfileResult": (ProfileResult, {"stale": {"boolean"}}, set()),
    # What the Python client types its answers as.
    "ConfiguredService": (ConfiguredService, {}, set()),
    "ProfileAccepted": (ProfileAccepted, {}, set()),
    "client ProfileRequest": (ProfileQueueEntry, {}, set()),
    "client ProfileResult": (ProfileResultRecord, {}, set()),
}
HEALTH = {"Healthy", "Unhealthy"}


def _model_schema(model: Any) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        # `info`'s records serialize through a function (to leave out the keys not set): their fields are
        # read from the validation schema, which is the same but for that.
        return model.model_json_schema(mode="validation" if issubclass(model, _Details) else "serialization")
    hints = typing.get_type_hints(model)  # a TypedDict (pydantic wants typing_extensions' on Python 3.11)
    return {"properties": {key: {"type": sorted(_python_types(hint))} for key, hint in hints.items()},
            "required": sorted(model.__required_keys__)}


def _python_types(hint: Any) -> set[str]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_python_types(arg) for arg in typing.get_args(hint)))
    if origin is typing.Literal:
        return {_json_type(value) for value in typing.get_args(hint)}
    if origin in (list, tuple):
        return {"array"}
    if origin is dict or typing.is_typeddict(hint):
        return {"object"}
    if hint is typing.Any:
        return set()
    return {_json_type(hint())}


def _types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON types a (property) schema admits; {} for "anything"."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _types(defs[name], defs)
    if "const" in schema:
        return {_json_type(schema["const"])}
    if "enum" in schema:
        return {_json_type(value) for value in schema["enum"]}
    out: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, ()):
            out |= _types(option, defs)
    kind = schema.get("type")
    if isinstance(kind, str):
        out.add(kind)
    elif isinstance(kind, list):
        out.update(kind)
    return out


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}[type(value)]


def _extra_allowed(schema: dict[str, Any]) -> bool:
    return schema.get("additionalProperties", True) is not False


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_schema_and_its_model_agree(name: str) -> None:
    model, added, hidden = PAIRS[name]
    ours = SCHEMAS[name.removeprefix("client ")]
    while "$ref" in ours:
        ours = SCHEMAS[ours["$ref"].rsplit("/", 1)[1]]
    theirs = _model_schema(model)
    defs = theirs.get("$defs", {})
    model_fields = {key: _types(value, defs) for key, value in theirs.get("properties", {}).items()
                    if key not in hidden}
    model_fields.update(added)
    spec_fields = {key: _types(value, SCHEMAS) for key, value in ours.get("properties", {}).items()}
    assert sorted(spec_fields) == sorted(model_fields), f"{name}: fields differ"
    for field, kinds in spec_fields.items():
        if kinds and model_fields[field]:  # a field left open on either side takes anything
            assert kinds == model_fields[field], f"{name}.{field}: {sorted(kinds)} in the spec, " \
                                                 f"{sorted(model_fields[field])} in the model"
    # The spec requires what the model requires, and promises no field the model may leave out of an answer
    # (every field of a model is answered, but a key of `info` only when it applies).
    required = set(theirs.get("required", ())) - hidden
    sparse = isinstance(model, type) and issubclass(model, _Details)
    always = required if sparse else set(model_fields)
    spec_required = set(ours.get("required", ()))
    assert required <= spec_required, f"{name}: the spec does not require {sorted(required - spec_required)}"
    assert spec_required <= always, f"{name}: the spec requires {sorted(spec_required - always)}, not always answered"
    if isinstance(model, type) and issubclass(model, BaseModel):  # a TypedDict cannot say (Python 3.11)
        forbids = model.model_config.get("extra") == "forbid"
        assert _extra_allowed(ours) == (not forbids), f"{name}: additionalProperties disagrees with the model"


def test_every_named_object_schema_is_checked_against_a_model() -> None:
    """A new schema needs a model to agree with (request bodies and error shapes are checked elsewhere)."""
    elsewhere = {"Name", "Error", "RequestProblem", "ProfileRequestList", "ProfileAll", "ActiveService"} | HEALTH
    assert sorted(set(SCHEMAS) - set(PAIRS) - elsewhere) == []


def test_health_shapes() -> None:
    fields = set(_model_schema(HealthStatus)["properties"])
    assert set(SCHEMAS["Healthy"]["properties"]) | set(SCHEMAS["Unhealthy"]["properties"]) == fields
