#!/usr/bin/env python3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald on a real NVIDIA GPU: detection, UUID pinning, measured VRAM and doctor (issue 21); see `tools/gpu-check`.

Everything Ozwald does with GPUs is tested against the stand-in NVML of tests/resources/fakes. This script asks a
real host instead, in one go of well under 5 minutes, and compares Ozwald's answers with the driver's own tool:

1. install: a venv (`--system-site-packages`, so the host's nvidia-ml-py, torch and cupy stay visible) gets
   Ozwald from the carried wheels (`--prepare` builds them: the ozwald wheel, its dependencies for the target
   Python, and pip itself, so neither the network nor the host's pip is needed);
2. host: `ozwald show_host_resources --json` against `nvidia-smi --query-gpu=…`, field by field;
3. admission: a service declaring `gpus: 1` goes through `place()` and `assess()` (what `POST
   /srv/services/active/update/` runs) and `render_unit()`: the unit must pin the real GPU by UUID, and one
   instance more than the GPUs can hold must be refused with the shortfall;
4. vram: a process allocates a known amount of GPU memory (torch, else cupy, or `--allocator`), and the
   profiler's measurement (`ozwald.resources.procs.FootprintSampler`) must find it;
5. doctor: `ozwald doctor --json`; its GPU check must pass, the rest is reported (no Podman, systemd or Redis
   is expected on the device machine);
6. every result goes into one JSON file; the exit status is 0 when every check passed, 1 when one failed (a
   mismatch), 2 when none failed but one was skipped (a skip is never a pass).

The outer process uses the standard library only (it runs under the host's python3); the parts that need
Ozwald run in the venv's Python as `--probe` subprocesses, which print one JSON document each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()
DEFAULT_WHEELS = ROOT / "build" / "gpu-check" / "wheels"
DEFAULT_TARGET_PYTHON = "3.12"  # the device machine's Python
TARGET_GLIBC = "2.17"  # manylinux2014: any current distribution
RESULT_FILE = "gpu-check.json"
MIB = 1024 * 1024
GIB = 1024 * MIB

# Tolerances, stated once and written into the JSON next to each comparison.
TOTAL_TOLERANCE_MIB = 1  # the same NVML number, both rounded down to MiB
FREE_TOLERANCE_MIB = 256  # read a moment apart; an idle GPU does not move
# NVML's v1 memory info (what Ozwald asks) counts the driver's reserved memory as used; nvidia-smi (v2) does not.
USED_TOLERANCE_MIB = 1024
VRAM_OVERHEAD_MIB = 1024  # measured - allocated: the CUDA context and the allocator's rounding
VRAM_SHARE = 0.6  # each instance of the admission check declares this share of the largest GPU
SMI_FIELDS = ("count", "index", "name", "uuid", "pci.bus_id", "memory.total", "memory.used", "memory.free",
              "driver_version")
BUDGET_S = 280.0  # the whole run; one device call allows 300 s
SAMPLES = 6
SAMPLE_INTERVAL_S = 0.5
PACKAGES = ("ozwald", "pydantic", "pydantic-core", "bottle", "waitress", "hiredis", "jeepney", "psutil", "PyYAML",
            "nvidia-ml-py", "torch", "cupy-cuda12x", "cupy-cuda11x")


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self, most: float) -> float:
        return max(1.0, min(most, self.end - time.monotonic()))


def run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A command's result; a missing program or a timeout becomes a result with status 127 or 124."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env, input=stdin,
                              check=False)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(list(argv), 124, out, err + f"\ntimed out after {timeout:.0f} s")


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def check(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, **fields}


def skipped(reason: str) -> dict[str, Any]:
    return check("skipped", reason=reason)


# -- pure comparisons -------------------------------------------------------------------------------------------


def parse_smi(text: str) -> list[dict[str, str]]:
    """`nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`, one row per GPU."""
    rows = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(SMI_FIELDS):
            raise ValueError(f"nvidia-smi line has {len(values)} fields, expected {len(SMI_FIELDS)}: {line!r}")
        rows.append(dict(zip(SMI_FIELDS, values, strict=True)))
    return rows


def bus_id(value: str) -> str:
    """nvidia-smi says 00000000:18:00.0, sysfs (and Ozwald) 0000:18:00.0."""
    parts = value.strip().lower().split(":")
    if len(parts) != 3:
        return value.strip().lower()
    try:
        return f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
    except ValueError:
        return value.strip().lower()


def compare_host(view: dict[str, Any], smi: list[dict[str, str]]) -> dict[str, Any]:
    """Every GPU field of `ozwald show_host_resources --json` against nvidia-smi; each comparison is listed."""
    comparisons: list[dict[str, Any]] = []

    def compare(what: str, ozwald: Any, driver: Any, tolerance: float | None = None, note: str = "") -> None:
        if tolerance is None:
            ok = ozwald == driver
        else:
            numbers = isinstance(ozwald, int | float) and isinstance(driver, int | float)
            ok = numbers and abs(ozwald - driver) <= tolerance
        entry: dict[str, Any] = {"field": what, "ozwald": ozwald, "nvidia_smi": driver, "ok": ok}
        if tolerance is not None:
            entry["tolerance_mib"] = tolerance
            if isinstance(ozwald, int | float) and isinstance(driver, int | float):
                entry["difference_mib"] = ozwald - driver
        if note:
            entry["note"] = note
        comparisons.append(entry)

    gpus = [g for g in view.get("gpus") or [] if g.get("vendor") == "nvidia"]
    count = int(smi[0]["count"]) if smi else 0
    compare("count", len(gpus), count)
    compare("total_gpus", view.get("total_gpus"), count)
    vendor = (view.get("vendors") or {}).get("nvidia") or {}
    compare("vendors.nvidia.available", vendor.get("available"), bool(smi))
    compare("vendors.nvidia.driver_version", vendor.get("driver_version"), smi[0]["driver_version"] if smi else None)
    by_index = {g.get("index"): g for g in gpus}
    for row in smi:
        index = int(row["index"])
        gpu = by_index.get(index, {})
        prefix = f"nvidia:{index}"
        compare(f"{prefix}.id", gpu.get("id"), prefix)
        compare(f"{prefix}.name", gpu.get("description"), row["name"])
        compare(f"{prefix}.uuid", gpu.get("uuid"), row["uuid"])
        compare(f"{prefix}.cdi_uuid_name", gpu.get("cdi_uuid_name"), f"nvidia.com/gpu={row['uuid']}")
        compare(f"{prefix}.pci_bus_id", gpu.get("pci_bus_id"), bus_id(row["pci.bus_id"]))
        total, free = gpu.get("total_vram"), gpu.get("available_vram")
        compare(f"{prefix}.total_vram_mib", total, int(row["memory.total"]), TOTAL_TOLERANCE_MIB)
        compare(f"{prefix}.available_vram_mib", free, int(row["memory.free"]), FREE_TOLERANCE_MIB)
        used = total - free if isinstance(total, int) and isinstance(free, int) else None
        compare(f"{prefix}.used_vram_mib", used, int(row["memory.used"]), USED_TOLERANCE_MIB,
                "total_vram - available_vram; NVML v1 counts reserved memory as used, nvidia-smi does not")
        compare(f"{prefix}.errors", gpu.get("errors"), [])
    bad = [c["field"] for c in comparisons if not c["ok"]]
    return check("fail" if bad else "pass", mismatches=bad, comparisons=comparisons)


def vram_share_gb(smi: list[dict[str, str]]) -> float:
    """What each admission-check instance declares: more than half the largest GPU, so two never share one."""
    largest = max(int(r["memory.total"]) for r in smi) / 1024
    return round(largest * VRAM_SHARE, 1)


def judge_admission(probe: dict[str, Any], smi: list[dict[str, str]], vram_gb: float) -> dict[str, Any]:
    """The first instances are pinned by UUID, one per GPU, the largest first; the one more is refused."""
    problems: list[str] = []
    uuids = [r["uuid"] for r in sorted(smi, key=lambda r: (-int(r["memory.total"]), int(r["index"])))]
    pins = probe.get("pins") or []
    for position, (pin, expected) in enumerate(zip(pins, uuids, strict=False)):
        wanted = f"AddDevice=nvidia.com/gpu={expected}"
        if pin.get("devices") != [f"nvidia.com/gpu={expected}"]:
            problems.append(f"instance {position} pinned to {pin.get('devices')}, expected nvidia.com/gpu={expected}")
        if wanted not in (pin.get("unit_lines") or []):
            problems.append(f"the unit of instance {position} lacks {wanted} (has {pin.get('unit_lines')})")
        if pin.get("conflicts"):
            problems.append(f"instance {position} alone was refused: {pin['conflicts']}")
    if len(pins) != len(uuids):
        problems.append(f"{len(pins)} instances placed, expected {len(uuids)} (one per GPU)")
    refused = probe.get("refused") or {}
    vram = [c for c in refused.get("conflicts") or [] if str(c.get("resource", "")).startswith("vram:nvidia:")]
    if not vram:
        problems.append(f"one instance more than the GPUs hold was not refused: {refused}")
    for conflict in vram:
        gpu = next((r for r in smi if f"vram:nvidia:{r['index']}" == conflict["resource"]), None)
        if gpu is None:
            problems.append(f"refused on an unknown GPU: {conflict['resource']}")
            continue
        capacity = round(int(gpu["memory.total"]) / 1024, 2)
        if conflict.get("needed") != round(2 * vram_gb, 2) or conflict.get("capacity") != capacity \
                or conflict.get("short_by") != round(2 * vram_gb - capacity, 2):
            problems.append(f"shortfall {conflict.get('message')} is not 2 × {vram_gb} GB against {capacity} GB")
    return check("fail" if problems else "pass", problems=problems, vram_gb_per_instance=vram_gb,
                 **{k: v for k, v in probe.items() if k != "status"})


def judge_vram(probe: dict[str, Any]) -> dict[str, Any]:
    """The profiler's measurement against what the allocator holds: at least that, at most the context more."""
    if probe.get("status") == "skipped":
        return probe
    if probe.get("status") != "measured":
        return check("fail", problems=[probe.get("error", "the measurement did not run")], **probe)
    allocated = probe["allocated_bytes"] / MIB
    measured = sum(probe.get("measured_peak_mib", {}).values())
    difference = round(measured - allocated, 1)
    problems = []
    if not 0 <= difference <= VRAM_OVERHEAD_MIB:
        problems.append(f"measured {measured:g} MiB for {allocated:g} MiB allocated ({difference:+g} MiB; "
                        f"expected 0 to +{VRAM_OVERHEAD_MIB} MiB)")
    return check("fail" if problems else "pass", problems=problems, allocated_mib=allocated, measured_mib=measured,
                 difference_mib=difference, tolerance_mib=[0, VRAM_OVERHEAD_MIB],
                 **{k: v for k, v in probe.items() if k != "status"})


NOT_EXPECTED = {"podman", "systemd", "redis"}  # not on the device machine: reported, not judged


def judge_doctor(findings: list[dict[str, Any]], returncode: int, smi: list[dict[str, str]]) -> dict[str, Any]:
    problems = []
    gpu = [f for f in findings if f.get("check") == "gpu" and str(f.get("message", "")).startswith("nvidia")]
    driver = smi[0]["driver_version"] if smi else None
    if not gpu:
        problems.append("doctor has no nvidia GPU finding")
    for finding in gpu:
        if finding.get("level") != "ok" or (driver and driver not in finding.get("message", "")):
            problems.append(f"gpu: {finding.get('level')} {finding.get('message')} (nvidia-smi: driver {driver})")
    judged = {"gpu"}
    for finding in findings:
        name = finding.get("check")
        if name in ("gpu", *NOT_EXPECTED):
            continue
        judged.add(str(name))
        if finding.get("level") == "fail":
            problems.append(f"{name}: {finding.get('message')}")
    return check("fail" if problems else "pass", problems=problems, exit_status=returncode,
                 judged=sorted(judged), reported_only=sorted(NOT_EXPECTED),
                 findings=[f"[{f.get('level')}] {f.get('check')}: {f.get('message')}" for f in findings])


def overall(checks: dict[str, dict[str, Any]]) -> tuple[str, int]:
    statuses = {c["status"] for c in checks.values()}
    if "fail" in statuses:
        return "fail", 1
    if "skipped" in statuses:
        return "incomplete", 2
    return "pass", 0


# -- steps (outer process) --------------------------------------------------------------------------------------


def prepare(wheels: Path, python_version: str) -> int:
    """The carried folder: tools/build-wheelhouse.sh for the target Python, plus pip to install them with."""
    env = {**os.environ, "OZWALD_GUEST_PYTHON": python_version, "OZWALD_GUEST_GLIBC": TARGET_GLIBC,
           "PYTHON": os.path.abspath(sys.executable)}  # this Python runs pip and the wheel build, from any directory
    built = subprocess.run([str(ROOT / "tools" / "build-wheelhouse.sh"), str(wheels)], env=env, check=False)
    if built.returncode != 0:
        return built.returncode
    pip = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                          "--only-binary=:all:", "--no-deps", "--dest", str(wheels), "pip"], check=False)
    if pip.returncode != 0:
        return pip.returncode
    size = sum(p.stat().st_size for p in wheels.iterdir())
    (wheels / "MANIFEST.json").write_text(json.dumps({
        "python": python_version, "glibc": TARGET_GLIBC, "machine": platform.machine(),
        "wheels": sorted(p.name for p in wheels.glob("*.whl")), "bytes": size}, indent=1) + "\n")
    print(f"{wheels}: {len(list(wheels.glob('*.whl')))} wheels, {size / MIB:.1f} MiB "
          f"(Python {python_version}, {platform.machine()})")
    return 0


def install(wheels: Path, venv: Path, deadline: Deadline) -> tuple[dict[str, Any], Path | None]:
    """A venv that sees the host's packages, with Ozwald installed offline by the carried pip."""
    manifest = wheels / "MANIFEST.json"
    if not manifest.is_file():
        return check("fail", error=f"no prepared wheels in {wheels}: run `tools/gpu-check --prepare` "
                                   "(or `make gpu-check-wheels`) first"), None
    prepared = json.loads(manifest.read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    pips = sorted(wheels.glob("pip-*.whl"))
    started = time.monotonic()
    created = run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                  deadline.left(60))
    if created.returncode != 0:
        return check("fail", error=f"python -m venv failed: {tail(created.stderr)}"), None
    python = venv / "bin" / "python"
    argv = [str(python), f"{pips[-1]}/pip", "install", "--no-index", "--find-links", str(wheels),
            "--disable-pip-version-check", "--no-warn-script-location", "ozwald"]
    installed = run(argv, deadline.left(120), env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    seconds = round(time.monotonic() - started, 1)
    fields = {"python": here, "wheels_for": prepared, "venv": str(venv), "seconds": seconds,
              "pip_tail": tail(installed.stdout + installed.stderr, 8)}
    if installed.returncode != 0:
        hint = (f" (the wheels are for Python {prepared['python']} on {prepared['machine']}, this is {here} on "
                f"{platform.machine()}: `tools/gpu-check --prepare --python-version {here}`)"
                if (prepared["python"], prepared["machine"]) != (here, platform.machine()) else "")
        return check("fail", error=f"pip install failed{hint}", **fields), None
    found = probe(python, "packages", [], deadline.left(60))
    fields["packages"] = found.get("packages")
    imported = str(found.get("ozwald") or "")
    if not imported.startswith(str(venv) + os.sep):
        return check("fail", error=f"the venv's Python imports Ozwald from {imported or 'nowhere'}, not the wheel "
                                   f"installed in {venv} ({found.get('error', 'PYTHONPATH?')})", **fields), None
    return check("pass", **fields), python


def nvidia_smi(deadline: Deadline) -> tuple[list[dict[str, str]] | None, dict[str, Any]]:
    argv = ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    done = run(argv, deadline.left(30))
    info: dict[str, Any] = {"command": shlex.join(argv), "exit_status": done.returncode, "output": done.stdout.strip()}
    if done.returncode != 0:
        info["error"] = tail(done.stderr or done.stdout, 5)
        return None, info
    try:
        return parse_smi(done.stdout), info
    except (ValueError, KeyError) as exc:
        info["error"] = str(exc)
        return None, info


def ozwald_command(python: Path) -> list[str]:
    script = python.parent / "ozwald"
    return [str(script)] if script.is_file() else [str(python), "-m", "ozwald"]


def probe(python: Path, name: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    done = run([str(python), str(SELF), "--probe", name, *args], timeout)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    except json.JSONDecodeError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        return {"status": "error", "error": f"probe {name} exited {done.returncode}: {tail(done.stderr, 12)}"}
    return result


SETTINGS = """\
# Written by tools/gpu-check: one service that wants one GPU and {vram_gb} GB of its memory.
hosts:
  - name: gpu-check
    ip: 127.0.0.1
provisioners:
  - name: gpu-check
    host: gpu-check
    cache: {{type: redis, parameters: {{unix_socket: /run/ozwald-redis/redis.sock}}}}
services:
  - name: gpu-check
    image: localhost/gpu-check:latest
    varieties:
      nvidia: {{resources: {{gpus: 1, vram_gb: {vram_gb}}}}}
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return PROBES[args.probe](args)
    if args.allocate is not None:
        return allocate(args.allocate)
    if args.prepare:
        return prepare(args.wheels, args.python_version)
    deadline = Deadline(BUDGET_S)
    started = time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report: dict[str, Any] = {
        "tool": "tools/gpu-check", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "host": {"hostname": socket.gethostname(), "kernel": platform.release(), "machine": platform.machine(),
                 "python": platform.python_version()},
        "tolerances_mib": {"total_vram": TOTAL_TOLERANCE_MIB, "available_vram": FREE_TOLERANCE_MIB,
                           "used_vram": USED_TOLERANCE_MIB, "vram_measured_minus_allocated": [0, VRAM_OVERHEAD_MIB]},
        "checks": {},
    }
    checks: dict[str, dict[str, Any]] = report["checks"]
    try:
        if args.python is not None:
            python: Path | None = args.python
            checks["install"] = skipped(f"--python {args.python}: Ozwald as installed there")
        else:
            checks["install"], python = install(args.wheels, workdir / "venv", deadline)
        smi, smi_info = nvidia_smi(deadline)
        report["nvidia_smi"] = smi_info
        if smi:
            report["host"].update(gpu=smi[0]["name"], driver=smi[0]["driver_version"], gpus=len(smi))
        run_checks(checks, python, smi, args, workdir, deadline)
    except Exception as exc:  # a bug here must still leave the JSON of what ran, on a machine lent for minutes
        checks["gpu-check"] = check("fail", error=f"the check itself failed: {type(exc).__name__}: {exc}",
                                    traceback=traceback.format_exc())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        report["seconds"] = round(time.time() - started, 1)
        report["result"], status = overall(checks)
        path = out / RESULT_FILE
        path.write_text(json.dumps(report, indent=1) + "\n")
    print_summary(report, path)
    return status


def run_checks(checks: dict[str, dict[str, Any]], python: Path | None, smi: list[dict[str, str]] | None,
               args: argparse.Namespace, workdir: Path, deadline: Deadline) -> None:
    if python is None:
        for name in ("host", "admission", "vram", "doctor"):
            checks[name] = skipped("Ozwald could not be installed")
        return
    if not smi:
        checks["host"] = check("fail", error="nvidia-smi gave no GPUs to compare with")
    else:
        shown = run([*ozwald_command(python), "show_host_resources", "--json"], deadline.left(60))
        try:
            checks["host"] = compare_host(json.loads(shown.stdout), smi)
        except json.JSONDecodeError:
            checks["host"] = check("fail", error=f"show_host_resources exited {shown.returncode}: {tail(shown.stderr)}")
    config = workdir / "ozwald.yml"
    vram_gb = vram_share_gb(smi) if smi else 1.0
    config.write_text(SETTINGS.format(vram_gb=vram_gb))
    if not smi:
        checks["admission"] = skipped("nvidia-smi gave no GPUs to expect pins on")
    else:
        found = probe(python, "admission", ["--config", str(config), "--instances", str(len(smi) + 1)],
                      deadline.left(60))
        checks["admission"] = (judge_admission(found, smi, vram_gb) if found.get("status") != "error"
                               else check("fail", **{**found, "status": "fail"}))
    if args.allocator == "none":
        checks["vram"] = skipped("--allocator none")
    else:
        allocator = shlex.split(args.allocator) if args.allocator else [str(python), str(SELF), "--allocate"]
        found = probe(python, "vram", ["--bytes", str(int(args.allocate_gib * GIB)),
                                       "--allocator", shlex.join(allocator)], deadline.left(150))
        checks["vram"] = judge_vram(found)
    env = {**os.environ, "OZWALD_PROVISIONER": "gpu-check", "OZWALD_CONFIG": str(config)}
    done = run([*ozwald_command(python), "doctor", "--json", "--config", str(config)], deadline.left(60), env=env)
    try:
        findings = json.loads(done.stdout)
        checks["doctor"] = judge_doctor(findings, done.returncode, smi or [])
    except json.JSONDecodeError:
        checks["doctor"] = check("fail", error=f"doctor exited {done.returncode}: {tail(done.stderr)}")


def print_summary(report: dict[str, Any], path: Path) -> None:
    host = report["host"]
    print(f"gpu-check on {host['hostname']}: {host.get('gpu', 'no GPU')} (driver {host.get('driver', '-')}), "
          f"Python {host['python']}, {report['seconds']} s")
    for name, result in report["checks"].items():
        why = result.get("reason") or result.get("error") or "; ".join(result.get("problems") or []) \
            or ", ".join(result.get("mismatches") or [])
        print(f"  {name:<10} {result['status']:<8} {why}")
        if name == "vram" and "measured_mib" in result:
            print(f"             measured {result['measured_mib']:g} MiB for {result['allocated_mib']:g} MiB "
                  f"allocated ({result['difference_mib']:+g} MiB, {', '.join(result.get('methods') or [])})")
        if name == "doctor":
            for line in result.get("findings") or []:
                print(f"             {line}")
    print(f"result: {report['result']} ({path})")


# -- probes: run in the venv's Python, with Ozwald importable ---------------------------------------------------


def probe_admission(args: argparse.Namespace) -> int:
    """place() and assess() as the provisioner's update runs them, then render_unit()."""
    import ozwald
    from ozwald.config import load_settings
    from ozwald.provisioner.admission import assess, place
    from ozwald.provisioner.requests import HostCapabilities, effective_spec, validate_requests
    from ozwald.quadlet import render_unit
    from ozwald.records import ServiceRequest
    from ozwald.resources import HostResourceMonitor

    settings = load_settings(Path(args.config))
    with HostResourceMonitor() as monitor:
        snapshot = monitor.snapshot()
    # The variety is named: the device machine need not have a CDI spec, which auto-selection asks for.
    host = HostCapabilities(gpu_vendors=frozenset(g.vendor for g in snapshot.gpus))
    requests = [ServiceRequest(name=f"gpu-check-{n}", service="gpu-check", variety="nvidia")
                for n in range(args.instances)]
    instances = validate_requests(settings, requests, host)
    placed = place(settings, instances, snapshot)
    pins = []
    for instance in placed[:-1]:
        alone = assess(settings, [instance], snapshot)
        unit = render_unit(effective_spec(settings, instance), instance.name)
        pins.append({"instance": instance.name, "devices": list(instance.devices or ()),
                     "unit_lines": [line for line in unit.text.splitlines() if line.startswith("AddDevice=")],
                     "conflicts": [c.describe() for c in alone.conflicts]})
    fit = assess(settings, placed, snapshot)
    refused = {"instances": [i.name for i in placed], "devices": {i.name: list(i.devices or ()) for i in placed},
               "conflicts": [c.detail() for c in fit.conflicts]}
    print(json.dumps({"status": "ran", "ozwald": ozwald.__file__, "pins": pins, "refused": refused}))
    return 0


def probe_vram(args: argparse.Namespace) -> int:
    """The profiler's VRAM measurement of one process holding a known allocation."""
    from ozwald.resources import HostResourceMonitor
    from ozwald.resources.procs import FootprintSampler

    result: dict[str, Any] = {"allocated_bytes": args.bytes, "allocator": args.allocator}
    with HostResourceMonitor() as monitor:
        before = monitor.snapshot()
        baseline = {g.id: g.vram_used_mib for g in before.gpus if g.vram_used_mib is not None}
        child = subprocess.Popen([*shlex.split(args.allocator), str(args.bytes)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            first = child.stdout.readline().strip()  # the allocator's own timeout bounds this (the probe's, too)
            result["allocator_said"] = first
            if first.startswith("skip:"):
                print(json.dumps({**result, "status": "skipped", "reason": first[5:].strip()}))
                return 0
            if not first.startswith("ready"):
                child.kill()
                _, err = child.communicate(timeout=10)
                print(json.dumps({**result, "status": "error",
                                  "error": f"allocator said {first!r} and exited {child.returncode}: {tail(err)}"}))
                return 0
            words = first.split()
            pid = int(words[1]) if len(words) > 1 and words[1].isdigit() else child.pid
            sampler = FootprintSampler()
            snapshot = before
            for _ in range(SAMPLES):
                snapshot = monitor.snapshot()
                sampler.sample(time.monotonic(), [pid], snapshot, baseline)
                time.sleep(SAMPLE_INTERVAL_S)  # samples spread over a few seconds, as the profiler's are
            result.update(
                status="measured", pid=pid, samples=sampler.samples,
                measured_peak_mib=dict(sampler.vram_peak_mib), methods=sorted(sampler.vram_methods),
                # What the measurement saw, for when it disagrees: NVML's process list and the device delta.
                nvml_processes={g.id: [[p.pid, p.used_vram_mib] for p in g.processes] for g in snapshot.gpus},
                device_delta_mib={g.id: (g.vram_used_mib or 0) - baseline.get(g.id, 0) for g in snapshot.gpus})
            if not any(p.pid == pid for g in snapshot.gpus for p in g.processes):
                result["note"] = (f"pid {pid} is not in NVML's process lists (another PID namespace?); "
                                  "the profiler then relies on the device delta")
        finally:
            if child.poll() is None:
                with contextlib.suppress(OSError):
                    assert child.stdin is not None
                    child.stdin.close()  # the allocator frees and exits
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
    print(json.dumps(result))
    return 0


def allocate(size: int) -> int:
    """The default allocator: hold `size` bytes of GPU memory through torch, else cupy, until stdin closes."""
    attempts: list[str] = []
    holders: list[Callable[[int], tuple[object, str]]] = [_torch_holder, _cupy_holder]
    for holder in holders:
        try:
            held, what = holder(size)
        except Exception as exc:  # an import error, no CUDA device, out of memory: try the next one
            attempts.append(f"{holder.__name__.strip('_').replace('_holder', '')}: {type(exc).__name__}: {exc}")
            continue
        print(f"ready {os.getpid()} {what}", flush=True)
        sys.stdin.read()
        del held
        return 0
    print(f"skip: no allocator could hold GPU memory ({'; '.join(attempts)})", flush=True)
    return 0


def _torch_holder(size: int) -> tuple[object, str]:
    import torch  # type: ignore[import-not-found,unused-ignore]

    held = torch.empty(size, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    return held, f"torch {torch.__version__}"


def _cupy_holder(size: int) -> tuple[object, str]:
    import cupy  # type: ignore[import-not-found,unused-ignore]

    held = cupy.empty(size, dtype=cupy.uint8)
    cupy.cuda.Device().synchronize()
    return held, f"cupy {cupy.__version__}"


def probe_packages(args: argparse.Namespace) -> int:
    """Where Ozwald is imported from, and the version and place of every package the check relies on."""
    from importlib import metadata

    import ozwald

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        packages[name] = f"{dist.version} ({dist.locate_file('')})"
    print(json.dumps({"status": "ran", "ozwald": ozwald.__file__, "packages": packages}))
    return 0


PROBES: dict[str, Callable[[argparse.Namespace], int]] = {
    "admission": probe_admission, "vram": probe_vram, "packages": probe_packages}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="build the wheel folder to carry, and stop")
    parser.add_argument("--python-version", default=DEFAULT_TARGET_PYTHON, help="with --prepare: the target's")
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help=f"default {DEFAULT_WHEELS}")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "build" / "gpu-check"),
                        help=f"where {RESULT_FILE} goes (default $OUT, else build/gpu-check)")
    parser.add_argument("--python", type=Path, help="use this Python's Ozwald instead of installing the wheels")
    parser.add_argument("--allocator", help="command that holds N bytes of GPU memory (N appended), prints "
                                            "'ready [PID]' (or 'skip: why'), and frees when stdin closes; "
                                            "'none' skips; default torch, else cupy")
    parser.add_argument("--allocate-gib", type=float, default=8.0, help="GPU memory to allocate (default 8)")
    parser.add_argument("--probe", choices=sorted(PROBES), help=argparse.SUPPRESS)
    parser.add_argument("--allocate", type=int, metavar="BYTES", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--instances", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
