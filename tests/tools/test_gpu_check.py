# SPDX-License-Identifier: AGPL-3.0-or-later
"""tools/gpu-check end to end, on a stand-in NVIDIA host (issue 21).

The seam is the vendor's: a `pynvml` module backed by tests/resources/fakes (through ozwald_fake_gpu_host, which
keeps one state file), an `nvidia-smi` executable first on PATH that answers from the same state, and an
allocator that registers its allocation there. Everything else is what runs on the real host: the wheels built
and installed into a venv, `ozwald show_host_resources --json`, placement, admission and rendering, the
profiler's VRAM measurement, and `ozwald doctor`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "gpu-check"
FAKES = ROOT / "tests" / "resources" / "fakes"
UUID = "GPU-0a0a0a0a-1111-2222-3333-444444444444"
TOTAL_MIB = 143771  # what NVML reports for an H200
SHIM = """\
# Stand-in for nvidia-ml-py: the NVML of tests/resources/fakes, answering from $OZWALD_FAKE_GPU_HOST.
import os, sys
from pathlib import Path
from ozwald_fake_gpu_host import StateNvml
sys.modules[__name__].__dict__.update(vars(StateNvml(Path(os.environ["OZWALD_FAKE_GPU_HOST"])).module()))
"""
NO_MODULE = 'raise ImportError("{name} is not installed on this stand-in host")\n'
ALLOCATOR = shlex.join([sys.executable, str(FAKES / "ozwald_fake_gpu_host.py"), "allocate"])


def host_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "driver_version": "550.54.15",
        "gpus": [{"name": "NVIDIA H200", "uuid": UUID, "bus_id": "00000000:18:00.0", "total_mib": TOTAL_MIB,
                  "used_mib": 0}],
        "reserved_mib": 497, "context_mib": 500, "per_process": True, "allocations": []}
    state.update(changes)
    return state


class StandIn:
    """The stand-in host's files, and a runner of tools/gpu-check against them."""

    def __init__(self, root: Path, state: dict[str, Any]) -> None:
        self.root = root
        self.state = root / "gpu-host.json"
        self.state.write_text(json.dumps(state))
        shim = root / "shim"
        shim.mkdir()
        (shim / "pynvml.py").write_text(SHIM)
        for name in ("torch", "cupy"):  # absent, whatever the machine running the tests has
            (shim / f"{name}.py").write_text(NO_MODULE.format(name=name))
        bin_dir = root / "bin"
        bin_dir.mkdir()
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(FAKES)!r})\n"
                       f"runpy.run_path({str(FAKES / 'ozwald_fake_gpu_host.py')!r}, run_name='__main__')\n")
        smi.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": f"{shim}{os.pathsep}{FAKES}", "OZWALD_FAKE_GPU_HOST": str(self.state)}
        for name in ("OUT", "OZWALD_CONFIG", "OZWALD_PROVISIONER"):
            self.env.pop(name, None)

    def run(self, *args: str) -> tuple[int, dict[str, Any], str]:
        out = self.root / "out"
        done = subprocess.run([str(TOOL), "--out", str(out), *args], env=self.env, capture_output=True, text=True,
                              timeout=280, cwd=self.root)
        report = json.loads((out / "gpu-check.json").read_text())
        return done.returncode, report, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The carried folder, for the Python that runs the tests (the device machine's is 3.12)."""
    folder = tmp_path_factory.mktemp("wheels")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run([str(TOOL), "--prepare", "--python-version", version, "--wheels", str(folder)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def comparison(report: dict[str, Any], field: str) -> dict[str, Any]:
    return next(c for c in report["checks"]["host"]["comparisons"] if c["field"] == field)


def test_installed_from_the_wheels_every_check_passes(tmp_path: Path, wheels: Path) -> None:
    host = StandIn(tmp_path, host_state())
    status, report, output = host.run("--wheels", str(wheels), "--allocator", ALLOCATOR)
    assert status == 0, output
    checks = report["checks"]
    assert report["result"] == "pass" and {c["status"] for c in checks.values()} == {"pass"}
    assert checks["install"]["packages"]["ozwald"].startswith("0.1.0 ")
    assert "/venv/" in checks["admission"]["ozwald"]  # the installed wheel, not this tree
    assert report["host"] | {"hostname": "-"} == {"hostname": "-", "kernel": report["host"]["kernel"],
                                                  "machine": report["host"]["machine"],
                                                  "python": report["host"]["python"], "gpu": "NVIDIA H200",
                                                  "driver": "550.54.15", "gpus": 1}
    # Every field compared; used memory differs by the reserved memory NVML's v1 counts, within the tolerance.
    assert comparison(report, "nvidia:0.uuid")["ozwald"] == UUID
    assert comparison(report, "nvidia:0.pci_bus_id")["ozwald"] == "0000:18:00.0"
    assert comparison(report, "nvidia:0.total_vram_mib")["difference_mib"] == 0
    assert comparison(report, "nvidia:0.used_vram_mib")["difference_mib"] == 497
    # One GPU: the first instance is pinned to it by UUID, the second is refused with the shortfall.
    admission = checks["admission"]
    assert admission["pins"] == [{"instance": "gpu-check-0", "devices": [f"nvidia.com/gpu={UUID}"],
                                  "unit_lines": [f"AddDevice=nvidia.com/gpu={UUID}"], "conflicts": []}]
    [conflict] = admission["refused"]["conflicts"]
    assert (conflict["resource"], conflict["needed"], conflict["capacity"], conflict["short_by"]) == (
        "vram:nvidia:0", 168.4, 140.4, 28.0)
    vram = checks["vram"]
    assert (vram["allocated_mib"], vram["measured_mib"], vram["methods"]) == (8192, 8692, ["NVML per-process"])
    doctor = checks["doctor"]
    assert "[ok] gpu: nvidia: driver 550.54.15" in doctor["findings"]
    assert "doctor" in output and "result: pass" in output


def test_without_per_process_numbers_the_device_delta_is_measured(tmp_path: Path) -> None:
    status, report, output = StandIn(tmp_path, host_state(per_process=False)).run(
        "--python", sys.executable, "--allocator", ALLOCATOR, "--allocate-gib", "2")
    assert status == 2, output  # the install was skipped: incomplete, never a pass
    assert report["result"] == "incomplete" and report["checks"]["install"]["status"] == "skipped"
    vram = report["checks"]["vram"]
    assert (vram["status"], vram["measured_mib"], vram["methods"]) == ("pass", 2548, ["device delta"])


@pytest.mark.parametrize(("changes", "failed", "mismatches", "problem"), [
    # nvidia-smi sees another GPU than NVML: the host comparison and the expected pin both fail.
    ({"smi": {"0": {"uuid": "GPU-ffffffff-1111-2222-3333-444444444444"}}}, {"host", "admission"},
     ["nvidia:0.uuid", "nvidia:0.cdi_uuid_name"],
     "instance 0 pinned to ['nvidia.com/gpu=GPU-0a0a0a0a-1111-2222-3333-444444444444'], "
     "expected nvidia.com/gpu=GPU-ffffffff-1111-2222-3333-444444444444"),
    # nvidia-smi's memory total is off by more than the tolerance (1 MiB).
    ({"smi": {"0": {"memory.total": TOTAL_MIB - 2}}}, {"host"}, ["nvidia:0.total_vram_mib"], None),
    # NVML sees 2 GiB of the 8 GiB allocated.
    ({"context_mib": -6144}, {"vram"}, [],
     "measured 2048 MiB for 8192 MiB allocated (-6144 MiB; expected 0 to +1024 MiB)"),
], ids=["uuid", "total", "vram"])
def test_a_mismatch_fails_the_run(tmp_path: Path, changes: dict[str, Any], failed: set[str], mismatches: list[str],
                                  problem: str | None) -> None:
    status, report, output = StandIn(tmp_path, host_state(**changes)).run(
        "--python", sys.executable, "--allocator", ALLOCATOR)
    assert status == 1, output
    assert report["result"] == "fail" and "result: fail" in output
    assert {n for n, c in report["checks"].items() if c["status"] == "fail"} == failed
    assert report["checks"]["host"]["mismatches"] == mismatches
    if problem is not None:
        assert problem in [p for c in report["checks"].values() for p in c.get("problems", [])]


def test_without_torch_or_cupy_the_allocation_is_skipped_not_passed(tmp_path: Path) -> None:
    status, report, output = StandIn(tmp_path, host_state()).run("--python", sys.executable)
    assert status == 2, output
    vram = report["checks"]["vram"]
    assert vram["status"] == "skipped"
    assert "torch: ImportError: torch is not installed" in vram["reason"]
    assert "cupy: ImportError: cupy is not installed" in vram["reason"]
    assert report["result"] == "incomplete" and "vram       skipped" in output


def test_without_prepared_wheels_the_install_fails_and_says_how(tmp_path: Path) -> None:
    status, report, _ = StandIn(tmp_path, host_state()).run("--wheels", str(tmp_path / "none"), "--allocator", "none")
    assert status == 1
    assert "tools/gpu-check --prepare" in report["checks"]["install"]["error"]
    assert {c["status"] for n, c in report["checks"].items() if n != "install"} == {"skipped"}
