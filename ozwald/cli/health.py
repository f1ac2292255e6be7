# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald status`, `doctor` and `show_host_resources`: how the provisioner and the host are doing."""

from __future__ import annotations

import argparse
from typing import Any

from ozwald.cli.common import (
    CACHE_UNIT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    PROVISIONER_UNIT,
    TARGET_UNIT,
    Actions,
    api_flags,
    client_of,
    config_flag,
    json_flag,
    load_env_file,
    provisioner_flag,
    settings_of,
    systemd,
)
from ozwald.cli.output import print_json, print_table


def doctor_findings(settings: Any, provisioner: str | None) -> list[Any]:
    from ozwald.doctor import run_checks

    load_env_file()  # the Redis password of the packaged install
    return list(run_checks(settings, provisioner))


def cmd_doctor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    _, settings = settings_of(args)
    findings = doctor_findings(settings, args.provisioner)
    if args.json:
        print_json([asdict(f) for f in findings])
    else:
        for finding in findings:
            print(finding.line())
    return EXIT_FAILED if any(f.level == "fail" for f in findings) else EXIT_OK


def cmd_show_host_resources(args: argparse.Namespace) -> int:
    if args.use_api:
        view: dict[str, Any] = dict(client_of(args).host_resources())
    else:
        from ozwald.resources import HostResourceMonitor, host_resources_view

        with HostResourceMonitor() as monitor:
            view = dict(host_resources_view(monitor.snapshot()))
    if args.json:
        print_json(view)
        return EXIT_OK
    print(f"CPU cores: {view.get('available_cpu_cores')} available of {view.get('total_cpu_cores')}")
    print(f"RAM:       {view.get('available_ram_gb')} GB available of {view.get('total_ram_gb')} GB")
    print(f"VRAM:      {view.get('available_vram_gb')} GB available of {view.get('total_vram_gb')} GB")
    print(f"GPUs:      {len(view.get('available_gpus') or [])} available of {view.get('total_gpus')}")
    gpus = view.get("gpus") or []
    if gpus:
        print_table(("GPU", "VRAM MiB", "FREE MiB", "DESCRIPTION"),
                    [(g.get("id"), g.get("total_vram"), g.get("available_vram"), g.get("description")) for g in gpus])
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Ozwald's units, API health, a Redis ping and the doctor's summary."""
    report: dict[str, Any] = {"units": {}, "api": {}, "redis": {}, "doctor": {}}
    code = EXIT_OK
    try:
        with systemd() as bus:
            for unit in (TARGET_UNIT, PROVISIONER_UNIT, CACHE_UNIT):
                state = bus.unit_state(unit)
                report["units"][unit] = f"{state.active_state} ({state.sub_state})"
    except Exception as exc:  # status reports what it can reach
        report["units"] = {"error": f"systemd not reachable: {exc}"}
    from ozwald.client import OzwaldAPIError, OzwaldClientError

    try:
        client = client_of(args, timeout=5.0)
        report["api"] = {"url": client.base_url, **dict(client.health())}
        if report["api"].get("status") != "healthy":
            code = EXIT_FAILED
    except OzwaldAPIError as exc:
        report["api"] = {"status": "unhealthy", "detail": exc.detail}
        code = EXIT_FAILED
    except OzwaldClientError as exc:
        report["api"] = {"status": "not reachable", "detail": str(exc)}
        code = EXIT_UNREACHABLE
    except Exception as exc:  # e.g. no API key here
        report["api"] = {"status": "unknown", "detail": str(exc)}
        code = EXIT_UNREACHABLE
    settings = None
    try:
        _, settings = settings_of(args)
    except Exception as exc:  # no settings here: Redis and doctor need them
        report["redis"] = report["doctor"] = {"status": "skipped", "detail": f"no settings: {exc}"}
    if settings is not None:
        report["redis"] = _redis_ping(settings, args.provisioner)
        findings = doctor_findings(settings, args.provisioner)
        report["doctor"] = {
            "ok": sum(f.level == "ok" for f in findings), "warn": sum(f.level == "warn" for f in findings),
            "fail": sum(f.level == "fail" for f in findings),
            "problems": [f.line() for f in findings if f.level != "ok"],
        }
    if args.json:
        print_json(report)
        return code
    print("units:")
    for unit, state in report["units"].items():
        print(f"  {unit:<22} {state}")
    api = report["api"]
    print(f"api:    {api.get('status')}" + (f" ({api['url']})" if "url" in api else "")
          + (f": {api['detail']}" if "detail" in api else ""))
    for name, reason in (api.get("components") or {}).items():
        print(f"  {name}: {reason}")
    redis = report["redis"]
    print(f"redis:  {redis.get('status')}" + (f": {redis['detail']}" if redis.get("detail") else ""))
    doctor = report["doctor"]
    if "problems" in doctor:
        print(f"doctor: {doctor['ok']} ok, {doctor['warn']} warnings, {doctor['fail']} failures")
        for line in doctor["problems"]:
            print("  " + line.replace("\n", "\n  "))
    else:
        print(f"doctor: {doctor.get('status')}: {doctor.get('detail')}")
    return code


def _redis_ping(settings: Any, provisioner: str | None) -> dict[str, Any]:
    from ozwald.state import StateError, connect, redis_errors, select_provisioner
    from ozwald.state.env import cache_parameters

    load_env_file()
    try:
        identity = select_provisioner(settings, provisioner)
        client = connect(cache_parameters(identity.provisioner), check=False)
        with redis_errors(client, "pinging"):
            client.ping()
        client.close()
    except StateError as exc:  # names the endpoint, never the password
        return {"status": "not reachable", "detail": str(exc)}
    except Exception as exc:
        return {"status": "not reachable", "detail": type(exc).__name__}
    return {"status": "PONG"}


def register(actions: Actions) -> None:
    status = actions.add("status", cmd_status, "Ozwald's units, API health, Redis ping and the doctor's summary")
    config_flag(status)
    provisioner_flag(status)
    api_flags(status)
    json_flag(status, "print the report as JSON")
    doctor = actions.add("doctor", cmd_doctor, "preflight checks, each with its fix")
    config_flag(doctor)
    provisioner_flag(doctor)
    json_flag(doctor, "print the findings as JSON")
    host = actions.add("show_host_resources", cmd_show_host_resources,
                       "CPU/RAM/GPU/VRAM of the host (--use-api: through the API)")
    host.add_argument("--use-api", action="store_true", help="ask the running provisioner instead of this process")
    api_flags(host)
    json_flag(host)
