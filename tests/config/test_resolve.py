# SPDX-License-Identifier: AGPL-3.0-or-later
import dataclasses
from pathlib import Path

import pytest

from ozwald.config import ResolveError, load_settings, parse_settings, resolve

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = load_settings(ROOT / "contrib" / "examples" / "contract.yml")

LAYERED = parse_settings("""\
services:
  - name: s
    image: base-image
    environment: {A: base, B: base, C: base}
    labels: {team: a, tier: base}
    ports: ["8000"]
    resources: {memory_gb: 4, cpus: 2}
    command: ["serve", "--base"]
    varieties:
      nvidia:
        environment: {B: variety}
        resources: {vram_gb: 6}
      cpu-only:
        image: cpu-image
        devices: []
      pinned:
        devices: ["nvidia.com/gpu=1"]
    profiles:
      fast:
        environment: {C: profile}
        ports: ["9000"]
        labels: {tier: profile}
        restart: always
      other-image:
        image: profile-image
""")


def test_precedence_base_variety_profile() -> None:
    spec = resolve(LAYERED, "s", "nvidia", "fast")
    assert spec.env == {"A": "base", "B": "variety", "C": "profile"}
    assert [p.podman_spec() for p in spec.ports] == ["9000:9000/tcp"]  # lists take the most specific
    assert dict(spec.labels) == {"team": "a", "tier": "profile"}
    assert spec.resources.vram_gb == 6 and spec.resources.memory_gb == 4 and spec.resources.cpus == 2
    assert spec.restart == "always"
    assert spec.command == ("serve", "--base")


def test_image_from_profile_then_variety_then_service() -> None:
    assert resolve(LAYERED, "s", "nvidia").image == "base-image"
    assert resolve(LAYERED, "s", "cpu-only").image == "cpu-image"
    assert resolve(LAYERED, "s", "cpu-only", "other-image").image == "profile-image"


def test_device_defaults_by_variety_name() -> None:
    assert resolve(CONTRACT, "qwen1.5-vllm", "nvidia").devices == ("nvidia.com/gpu=all",)
    assert resolve(CONTRACT, "qwen1.5-vllm", "amdgpu").devices == ("amd.com/gpu=all",)
    assert resolve(CONTRACT, "qwen1.5-vllm", "cpu-only").devices == ()


def test_explicit_devices_win_and_empty_means_none() -> None:
    assert resolve(LAYERED, "s", "pinned").devices == ("nvidia.com/gpu=1",)
    assert resolve(LAYERED, "s", "cpu-only").devices == ()
    assert resolve(LAYERED, "s", "nvidia").devices == ("nvidia.com/gpu=all",)


def test_contract_merge_matches_predecessor() -> None:
    spec = resolve(CONTRACT, "qwen1.5-vllm", "nvidia", "fast-gpu")
    assert spec.env == {
        "MODEL_NAME": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        "GPU": "true",
        "GPU_MEMORY_UTILIZATION": "0.9",
        "CPU_OFFLOAD_GB": "",
    }
    assert spec.image == "openai-api-vllm.nvidia"


def test_source_files_resolve_their_environment() -> None:
    spec = resolve(CONTRACT, "fiction-sources")
    assert spec.type == "source-files" and spec.env == {"DIRECTORY": "sources/"} and spec.image is None


@pytest.mark.parametrize(
    "args,field,fragment",
    [
        (("nope", "nvidia", None), "service", "unknown service 'nope'"),
        (("qwen1.5-vllm", "tpu", None), "variety", "has no variety 'tpu' (varieties: nvidia, amdgpu, cpu-only)"),
        (("qwen1.5-vllm", "nvidia", "turbo"), "profile", "has no profile 'turbo' (profiles: no-gpu, fast-gpu)"),
        (("qwen1.5-vllm", None, None), "variety", "needs a variety"),
    ],
)
def test_unknown_names_are_errors(args: tuple[str, str | None, str | None], field: str, fragment: str) -> None:
    with pytest.raises(ResolveError) as info:
        resolve(CONTRACT, *args)
    assert info.value.field == field
    assert fragment in info.value.message


def test_spec_is_immutable_and_hash_tracks_changes() -> None:
    spec = resolve(CONTRACT, "qwen1.5-vllm", "cpu-only", "no-gpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.image = "other"  # type: ignore[misc]
    assert spec.spec_hash == resolve(CONTRACT, "qwen1.5-vllm", "cpu-only", "no-gpu").spec_hash
    hashes = {resolve(CONTRACT, "qwen1.5-vllm", v, p).spec_hash
              for v in ("nvidia", "amdgpu", "cpu-only") for p in (None, "no-gpu", "fast-gpu")}
    assert len(hashes) == 9


def test_env_order_in_file_does_not_change_the_hash() -> None:
    a = parse_settings("services: [{name: s, image: x, environment: {A: '1', B: '2'}}]")
    b = parse_settings("services: [{name: s, image: x, environment: {B: '2', A: '1'}}]")
    assert resolve(a, "s").spec_hash == resolve(b, "s").spec_hash
