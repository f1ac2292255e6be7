# SPDX-License-Identifier: AGPL-3.0-or-later
import pytest

from ozwald.config import parse_settings, resolve
from ozwald.quadlet import RenderError, render_unit
from tests.quadlet.cases import ADVERSARIAL_COMMAND, ADVERSARIAL_ENV, ADVERSARIAL_LABELS, CASES_SETTINGS, cases
from tests.support.quadlet import dryrun, podman_run_args

CASES = cases()


def _generated_argv(name: str) -> list[str]:
    unit = CASES[name]
    result = dryrun({unit.filename: unit.text})
    assert result.returncode == 0, result.stderr
    return result.exec_start(unit.unit_name)


def test_same_input_gives_same_bytes() -> None:
    again = cases()
    assert {k: v.text for k, v in again.items()} == {k: v.text for k, v in CASES.items()}


def test_nvidia_fast_gpu_reaches_podman_exactly() -> None:
    argv = _generated_argv("qwen-nvidia-fast-gpu")
    args = podman_run_args(argv)
    assert sorted(args["--env"]) == sorted([
        "CPU_OFFLOAD_GB=", "GPU=true", "GPU_MEMORY_UTILIZATION=0.9",
        "MODEL_NAME=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"])
    assert args["--device"] == ["nvidia.com/gpu=all"]
    assert args["--publish"] == []
    assert "--sdnotify=healthy" not in argv  # no health check configured: readiness is the start itself
    assert argv[argv.index("--name") + 1] == "ozwald-qwen-nvidia-fast-gpu"


def test_amd_and_cpu_devices() -> None:
    assert podman_run_args(_generated_argv("qwen-amdgpu-no-gpu"))["--device"] == ["amd.com/gpu=all"]
    assert podman_run_args(_generated_argv("qwen-cpu-only-base"))["--device"] == []


def test_pinned_gpu_ports_volumes_and_health_reach_podman() -> None:
    argv = _generated_argv("pinned-gpu-uuid")
    args = podman_run_args(argv)
    assert args["--device"] == ["nvidia.com/gpu=GPU-2f3c1a9e-7b1d-4c55-9e0a-1f2b3c4d5e6f"]
    assert args["--publish"] == ["127.0.0.1:8000:8000/tcp"]
    assert args["-v"] == ["/srv/models:/models:ro", "vllm-cache:/root/.cache"]
    assert "--sdnotify=healthy" in argv
    assert argv[argv.index("--health-interval") + 1] == "15s"
    assert argv[argv.index("--health-start-period") + 1] == "600s"
    assert argv[argv.index("--shm-size") + 1] == "16g"
    assert argv[-4:] == ["--model", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "--port", "8000"]


def test_labels_identify_the_instance_and_spec() -> None:
    unit = CASES["qwen-cpu-only-no-gpu"]
    labels = podman_run_args(_generated_argv("qwen-cpu-only-no-gpu"))["--label"]
    assert set(labels) >= {"ozwald.managed=true", "ozwald.instance=qwen-cpu-only-no-gpu",
                           "ozwald.service=qwen1.5-vllm", "ozwald.variety=cpu-only", "ozwald.profile=no-gpu",
                           f"ozwald.spec-hash={unit.spec_hash}"}


def test_adversarial_values_arrive_byte_for_byte() -> None:
    argv = _generated_argv("adversarial")
    args = podman_run_args(argv)
    env = dict(item.split("=", 1) for item in args["--env"])
    assert env == ADVERSARIAL_ENV
    assert {k: v for k, v in (i.split("=", 1) for i in args["--label"]) if not k.startswith("ozwald.")} == \
        ADVERSARIAL_LABELS
    assert argv[-len(ADVERSARIAL_COMMAND):] == ADVERSARIAL_COMMAND
    import json

    assert json.loads(argv[argv.index("--entrypoint") + 1]) == ["/usr/bin/env", "%n $X"]
    assert json.loads(argv[argv.index("--health-cmd") + 1]) == [
        "CMD-SHELL", "test -n \"$HOME\" && echo '%h' > /dev/null"]


def test_adversarial_values_add_no_directive_or_section() -> None:
    unit = CASES["adversarial"]
    sections = [line for line in unit.text.splitlines() if line.startswith("[")]
    assert sections == ["[Unit]", "[Container]", "[Service]"]
    keys = {line.split("=", 1)[0] for line in unit.text.splitlines() if "=" in line and not line.startswith("#")}
    assert "ExecStartPre" not in keys and "User" not in keys
    generated = dryrun({unit.filename: unit.text}).units()[unit.unit_name]
    generated_keys = {line.split("=", 1)[0] for line in generated.splitlines() if "=" in line}
    assert "ExecStartPre" not in generated_keys and "User" not in generated_keys
    assert [line for line in generated.splitlines() if line.startswith("[")] == [
        "[Unit]", "[X-Container]", "[Service]"]


def test_persistent_services_get_an_install_section() -> None:
    assert "[Install]\nWantedBy=multi-user.target" in CASES["health-command-persistent"].text
    assert "[Install]" not in CASES["pinned-gpu-uuid"].text


@pytest.mark.parametrize("version,fragment", [
    ((4, 3), "Quadlet needs Podman 4.4 or newer"),
    ((4, 4), "[Container] HealthCmd needs Podman 4.5 or newer; the target is Podman 4.4"),
    ((4, 6), "[Container] ShmSize needs Podman 4.7 or newer; the target is Podman 4.6"),
    ((4, 9), "[Container] Entrypoint needs Podman 5.0 or newer; the target is Podman 4.9"),
])
def test_old_podman_fails_naming_key_and_version(version: tuple[int, int], fragment: str) -> None:
    settings = parse_settings("""services:
  - {name: s, image: x, health: {command: [/bin/true]}}
  - {name: t, image: x, shm_size: 1g}
  - {name: u, image: x, entrypoint: [/bin/sh]}
""")
    name = {(4, 3): "s", (4, 4): "s", (4, 6): "t", (4, 9): "u"}[version]
    spec = resolve(settings, name)
    with pytest.raises(RenderError) as info:
        render_unit(spec, "x", version)
    assert fragment in str(info.value)


def test_podman_4_9_degrades_notify_and_stop_timeout_with_warnings() -> None:
    settings = parse_settings("services: [{name: s, image: x, health: {command: [/bin/true]}, stop_timeout: 60}]")
    old = render_unit(resolve(settings, "s"), "s", (4, 9))
    assert "Notify=" not in old.text and "StopTimeout=" not in old.text
    assert "HealthCmd=" in old.text
    assert len(old.warnings) == 2
    assert "no Notify=healthy" in old.warnings[0] and "no StopTimeout" in old.warnings[1]
    new = render_unit(resolve(settings, "s"), "s", (5, 0))
    assert "Notify=healthy" in new.text and "StopTimeout=60" in new.text and new.warnings == ()


def test_source_files_never_become_units() -> None:
    spec = resolve(CASES_SETTINGS["contract"], "fiction-sources")
    with pytest.raises(RenderError, match="only container services become units"):
        render_unit(spec, "fiction-sources")


def test_bad_instance_name_is_refused() -> None:
    spec = resolve(CASES_SETTINGS["contract"], "qwen1.5-vllm", "cpu-only")
    with pytest.raises(ValueError, match="invalid name"):
        render_unit(spec, "x\n[Service]")
