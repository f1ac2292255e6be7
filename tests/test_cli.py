# SPDX-License-Identifier: AGPL-3.0-or-later
import os
import subprocess
import sys
from pathlib import Path

from tests.support.quadlet import dryrun

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "contrib" / "examples" / "contract.yml"


def ozwald(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "OZWALD_CONFIG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ozwald", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=60)


def test_render_prints_a_unit_the_real_generator_accepts() -> None:
    out = ozwald("render", "qwen1.5-vllm", "--variety", "nvidia", "--profile", "fast-gpu", "--config", str(CONTRACT))
    assert out.returncode == 0, out.stderr
    assert "AddDevice=nvidia.com/gpu=all\n" in out.stdout
    assert 'Environment="GPU_MEMORY_UTILIZATION=0.9"\n' in out.stdout
    assert 'Environment="MODEL_NAME=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"\n' in out.stdout
    result = dryrun({"ozwald-qwen1.5-vllm.container": out.stdout})
    assert result.returncode == 0, result.stderr
    assert "ozwald-qwen1.5-vllm.service" in result.units()


def test_render_uses_the_instance_name() -> None:
    out = ozwald("render", "qwen1.5-vllm", "--variety", "cpu-only", "--name", "qwen-b", "--config", str(CONTRACT))
    assert out.returncode == 0 and "ContainerName=ozwald-qwen-b\n" in out.stdout


def test_unknown_variety_exits_2_without_traceback() -> None:
    out = ozwald("render", "qwen1.5-vllm", "--variety", "tpu", "--config", str(CONTRACT))
    assert out.returncode == 2
    assert out.stderr == ("error: variety: service 'qwen1.5-vllm' has no variety 'tpu' "
                          "(varieties: nvidia, amdgpu, cpu-only)\n")
    assert out.stdout == ""


def test_unknown_key_exits_2_with_file_line_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "ozwald.yml"
    bad.write_text(CONTRACT.read_text().replace("        image: openai-api-vllm.amdgpu",
                                                "        imaeg: openai-api-vllm.amdgpu"))
    out = ozwald("check_config", "--config", str(bad))
    assert out.returncode == 2
    assert f"error: {bad}:26: services[0].varieties.amdgpu.imaeg: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_check_config_summarises() -> None:
    out = ozwald("check_config", "--config", str(CONTRACT))
    assert out.returncode == 0
    assert "qwen1.5-vllm (container) varieties: nvidia, amdgpu, cpu-only; profiles: no-gpu, fast-gpu" in out.stdout
    assert "fiction-sources (source-files)" in out.stdout


def test_config_path_from_env_then_local_file(tmp_path: Path) -> None:
    out = ozwald("check_config", env={"OZWALD_CONFIG": str(CONTRACT)}, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith(f"{CONTRACT}: OK")
    (tmp_path / "ozwald.yml").write_text("services: []\n")
    local = ozwald("check_config", cwd=tmp_path)
    assert local.returncode == 0 and local.stdout.startswith(f"{tmp_path / 'ozwald.yml'}: OK")


def test_missing_default_config_is_a_clear_error(tmp_path: Path) -> None:
    out = ozwald("check_config", cwd=tmp_path)
    if Path("/etc/ozwald/ozwald.yml").exists():
        return
    assert out.returncode == 2
    assert out.stderr == "error: /etc/ozwald/ozwald.yml: settings file not found\n"


def test_render_source_files_service_is_refused() -> None:
    out = ozwald("render", "fiction-sources", "--config", str(CONTRACT))
    assert out.returncode == 2 and "only container services" in out.stderr


def test_render_for_old_podman_names_the_key() -> None:
    out = ozwald("render", "qwen1.5-vllm", "--variety", "cpu-only", "--podman-version", "4.3",
                 "--config", str(CONTRACT))
    assert out.returncode == 2 and "Quadlet needs Podman 4.4 or newer; the target is Podman 4.3" in out.stderr
