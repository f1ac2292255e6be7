# SPDX-License-Identifier: AGPL-3.0-or-later
"""Variety choice and request validation: pure functions of the settings and the host's capabilities."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from ozwald.config import Service, parse_settings
from ozwald.provisioner.requests import HostCapabilities, pick_variety, validate_requests
from ozwald.records import ServiceRequest, UpdateError

SETTINGS = parse_settings("""\
services:
  - name: llm
    image: vllm
    varieties:
      nvidia: {}
      amdgpu: {}
      cpu-only: {}
    profiles:
      fast: {}
  - name: gpu-only
    image: x
    varieties:
      nvidia: {}
  - name: pinned
    image: x
    varieties:
      second-gpu: {devices: ["nvidia.com/gpu=1"]}
      plain: {devices: ["/dev/dri/renderD128"]}
  - name: plain
    image: x
""")
NVIDIA_CDI = frozenset({"nvidia.com/gpu=all", "nvidia.com/gpu=0"})


def _service(name: str) -> Service:
    service = SETTINGS.service(name)
    assert service is not None
    return service


@pytest.mark.parametrize("host,expected", [
    (HostCapabilities(gpu_vendors=frozenset({"nvidia"}), cdi_names=NVIDIA_CDI), "nvidia"),
    (HostCapabilities(gpu_vendors=frozenset({"amd"}), cdi_names=frozenset(), has_kfd=True), "amdgpu"),
    (HostCapabilities(gpu_vendors=frozenset({"amd"}), cdi_names=frozenset({"amd.com/gpu=all"})), "amdgpu"),
    (HostCapabilities(), "cpu-only"),
    (HostCapabilities(gpu_vendors=frozenset({"nvidia"}), cdi_names=None), "nvidia"),  # CDI not consulted
    (frozenset({"nvidia"}), "nvidia"),  # a plain set of vendors
    ((), "cpu-only"),
])
def test_pick_variety_takes_the_first_variety_the_host_can_run(host: HostCapabilities | Collection[str],
                                                                expected: str) -> None:
    variety, why = pick_variety(SETTINGS, _service("llm"), host)
    assert variety == expected
    assert why.startswith("first variety this host can run")


def test_pick_variety_says_what_it_skipped_and_why() -> None:
    host = HostCapabilities(gpu_vendors=frozenset({"nvidia"}), cdi_names=frozenset())
    assert pick_variety(SETTINGS, _service("llm"), host) == (
        "cpu-only", "first variety this host can run; skipped nvidia (no CDI spec provides nvidia.com/gpu=all); "
                    "amdgpu (no amd GPU on this host)")


def test_pick_variety_with_nothing_that_fits_explains_each() -> None:
    assert pick_variety(SETTINGS, _service("gpu-only"), HostCapabilities()) == (
        None, "nvidia (no nvidia GPU on this host)")


def test_pick_variety_checks_the_exact_cdi_device_and_ignores_device_paths() -> None:
    host = HostCapabilities(gpu_vendors=frozenset({"nvidia"}), cdi_names=NVIDIA_CDI)
    assert pick_variety(SETTINGS, _service("pinned"), host)[0] == "plain"  # nvidia.com/gpu=1 has no spec here
    wider = HostCapabilities(gpu_vendors=frozenset({"nvidia"}), cdi_names=NVIDIA_CDI | {"nvidia.com/gpu=1"})
    assert pick_variety(SETTINGS, _service("pinned"), wider)[0] == "second-gpu"


def test_pick_variety_without_varieties() -> None:
    assert pick_variety(SETTINGS, _service("plain"), HostCapabilities()) == (None, "")


def test_validate_requests_resolves_and_marks_auto_varieties() -> None:
    items = [ServiceRequest(name="a", service="llm", profile="fast"), ServiceRequest(name="llm", variety="amdgpu"),
             ServiceRequest(name="plain")]
    desired = validate_requests(SETTINGS, items, HostCapabilities())
    assert [(d.name, d.service, d.variety, d.profile, d.variety_auto) for d in desired] == [
        ("a", "llm", "cpu-only", "fast", True), ("llm", "llm", "amdgpu", None, False),
        ("plain", "plain", None, None, False)]


@pytest.mark.parametrize("items,index,field,message", [
    ([ServiceRequest(name="plain"), ServiceRequest(name="nope")], 1, "service", "unknown service 'nope'"),
    ([ServiceRequest(name="x", service="nope")], 0, "service", "unknown service 'nope'"),
    ([ServiceRequest(name="llm", variety="tpu")], 0, "variety", "has no variety 'tpu'"),
    ([ServiceRequest(name="llm", variety="nvidia", profile="slow")], 0, "profile", "has no profile 'slow'"),
    ([ServiceRequest(name="gpu-only")], 0, "variety", "no variety of 'gpu-only' can run on this host: nvidia"),
    ([ServiceRequest(name="plain"), ServiceRequest(name="plain")], 1, "name",
     "duplicate instance name 'plain' (also item 0)"),
])
def test_validate_requests_names_the_item_and_field(items: list[ServiceRequest], index: int, field: str,
                                                    message: str) -> None:
    with pytest.raises(UpdateError) as raised:
        validate_requests(SETTINGS, items, HostCapabilities())
    assert (raised.value.index, raised.value.field) == (index, field)
    assert message in raised.value.message
