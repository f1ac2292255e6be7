# SPDX-License-Identifier: AGPL-3.0-or-later
"""api/openapi.yaml against the served app: the same routes, and responses that conform (schemathesis)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ozwald.api import ApiServer, create_app
from tests.api.conftest import API_KEY, ENDPOINTS, FakeCore, SwitchableCore, twin

SPEC_PATH = Path(__file__).resolve().parents[2] / "api" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def _spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in METHODS}


def _served_operations() -> set[tuple[str, str]]:
    app = create_app(FakeCore(), API_KEY)
    # Bottle's `<name>` is OpenAPI's `{name}`
    return {(route.method, re.sub(r"<(\w+)>", r"{\1}", route.rule)) for route in app.routes}


def test_spec_is_openapi_3_1_with_bearer_auth(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"]
        ["description"]}
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/health"]["get"]["security"] == []


def test_every_served_route_is_documented_and_vice_versa(spec: dict[str, Any]) -> None:
    documented = _spec_operations(spec)
    served = _served_operations()
    # the spec lists each path once, as written in the contract; the app serves it and its slash twin
    expected = documented | {(method, twin(path)) for method, path in documented}
    assert served == expected
    assert {(method, path) for method, path, _ in ENDPOINTS} == documented


def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            codes = set(operation["responses"])
            if path != "/health":
                assert "401" in codes, (method, path)
                assert operation.get("security") is None, (method, path)
            if method == "post":
                assert {"413", "422"} <= codes, (method, path)
            assert all(code.isdigit() for code in codes)


def test_contract_fields_are_in_the_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["ServiceInformation"]["properties"]) >= {"name", "service", "variety", "profile", "status",
                                                                "properties", "info"}
    assert schemas["ServiceInformation"]["properties"]["status"]["enum"] == ["starting", "available", "idle",
                                                                             "stopping", "failed"]
    assert set(schemas["HostResources"]["required"]) >= {
        "total_cpu_cores", "available_cpu_cores", "total_ram_gb", "available_ram_gb", "total_vram_gb",
        "available_vram_gb", "total_gpus", "available_gpus", "gpus"}
    assert set(schemas["GpuSummary"]["required"]) >= {"id", "total_vram", "available_vram", "description",
                                                      "pci_device_description"}
    assert set(schemas["AvailableResource"]["required"]) == {"name", "type", "unit", "value", "related_resources",
                                                             "extended_attributes"}
    assert schemas["AvailableResource"]["properties"]["type"]["enum"] == ["cpu", "memory", "gpu", "vram"]
    assert schemas["Error"]["required"] == ["detail"]
    assert set(schemas["PlanEntry"]["required"]) == {"name", "action", "reason"}


# -- schemathesis ------------------------------------------------------------------------------------

MAX_EXAMPLES = 50  # per operation and generation mode: about 20 s on a 2-core machine


@pytest.fixture
def lenient_core(switch: SwitchableCore) -> FakeCore:
    """A core that accepts any well-formed service name, so that valid requests are accepted."""
    switch.current = FakeCore(strict_services=False)
    return switch.current


def _unique_names(case: Any) -> Any:
    """Instance names must be unique, a rule JSON Schema cannot state: drop the repeats from valid bodies."""
    if isinstance(case.body, list) and all(isinstance(item, dict) and "name" in item for item in case.body):
        seen: set[str] = set()
        unique = []
        for item in case.body:
            if item["name"] not in seen:
                seen.add(item["name"])
                unique.append(item)
        case.body = unique
    return case


def test_schemathesis_responses_conform(server: ApiServer, lenient_core: FakeCore) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi.checks import negative_data_rejection

    schema = schemathesis.openapi.from_path(SPEC_PATH)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ENDPOINTS)
    tested: list[str] = []
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is schemathesis.GenerationMode.POSITIVE:
                strategy = strategy.map(_unique_names)

            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case: Any) -> None:
                # Every request carries the valid token, so a case that negates the Authorization header (or
                # that schemathesis marks so beside another part) is answered 200 by design: the rejection
                # of bad input is asserted by the endpoint tests, and here every answer must match the spec.
                case.call_and_validate(base_url=server.url, headers=auth, excluded_checks=[negative_data_rejection])

            try:
                run()
            except Unsatisfiable:
                # nothing to negate: no parameters, no body, no security (GET /health)
                assert mode is schemathesis.GenerationMode.NEGATIVE
                continue
            tested.append(f"{operation.method.upper()} {operation.path} [{mode.value}]")
    negated = {entry.split(" [")[0] for entry in tested if entry.endswith("[negative]")}
    assert negated == {f"{method} {path}" for method, path, _ in ENDPOINTS if path != "/health"}
