# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald serve`, `start_provisioner` and `stop_provisioner`: the provisioner process and its units."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ozwald.cli.common import (
    CACHE_UNIT,
    EXIT_FAILED,
    EXIT_OK,
    PROVISIONER_UNIT,
    TARGET_UNIT,
    Actions,
    UsageError,
    config_flag,
    drop_in_path,
    json_flag,
    port,
    provisioner_flag,
    settings_of,
    systemd,
)

JOB_TIMEOUT = 120.0


def cmd_serve(args: argparse.Namespace) -> int:
    from ozwald.process import serve
    from ozwald.state import select_provisioner

    path, settings = settings_of(args)
    identity = select_provisioner(settings, args.provisioner)
    return serve(settings, identity, host=args.bind, port=args.api_port, config_path=path)


def drop_in_text(variable: str, value: int) -> str:
    return (f"# Written by `ozwald start_provisioner`; the next start_provisioner with the option rewrites it.\n"
            f"[Service]\nEnvironment={variable}={value}\n")


def write_drop_ins(args: argparse.Namespace, unit_dir: Path | None = None) -> list[Path]:
    """The --api-port/--redis-port choices as drop-ins; returns the files that changed."""
    changed = []
    for unit, variable, value in ((PROVISIONER_UNIT, "OZWALD_API_PORT", args.api_port),
                                  (CACHE_UNIT, "OZWALD_REDIS_PORT", args.redis_port)):
        if value is None:
            continue
        path = drop_in_path(unit, unit_dir)
        text = drop_in_text(variable, value)
        if path.exists() and path.read_text() == text:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        except OSError as exc:  # not root, most likely
            raise UsageError(f"{path}: {exc.strerror} (start_provisioner writes systemd drop-ins: run it as root)"
                             ) from None
        changed.append(path)
    return changed


def _outcome(unit: str, outcome: Any) -> dict[str, Any]:
    return {"unit": unit, "operation": outcome.operation, "result": outcome.result,
            "seconds": round(outcome.seconds, 3)}


def _report(args: argparse.Namespace, done: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    done.append(entry)
    if not args.json:
        if "operation" in entry:
            print(f"{entry['unit']}: {entry['operation']} {entry['result']} ({entry['seconds']:.2f} s)")
        else:
            print(f"{entry['unit']}: {entry['result']}")


def cmd_start_provisioner(args: argparse.Namespace) -> int:
    """Write the port drop-ins, then start Ozwald's Redis, the provisioner and ozwald.target over D-Bus.

    Without --no-restart, running units are restarted (so new ports apply); with it they are left alone.
    The provisioner's start job ends when it sends READY=1: its API answers."""
    written = [str(path) for path in write_drop_ins(args)]
    for path in written:
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    code = EXIT_OK
    done: list[dict[str, Any]] = []
    with systemd() as bus:
        bus.reload()
        for unit in (CACHE_UNIT, PROVISIONER_UNIT):
            running = bus.unit_state(unit).active_state in ("active", "reloading", "activating")
            if running and args.no_restart:
                _report(args, done, {"unit": unit, "result": "left running (--no-restart)"})
                continue
            outcome = (bus.restart_unit(unit, timeout=JOB_TIMEOUT) if running
                       else bus.start_unit(unit, timeout=JOB_TIMEOUT))
            _report(args, done, _outcome(unit, outcome))
            if not outcome.ok:
                code = EXIT_FAILED
        _report(args, done, _outcome(TARGET_UNIT, bus.start_unit(TARGET_UNIT, timeout=JOB_TIMEOUT)))
    if args.json:
        from ozwald.cli.output import print_json

        print_json({"drop_ins": written, "units": done})
    if code != EXIT_OK:
        print(f"see: journalctl -u {PROVISIONER_UNIT} -u {CACHE_UNIT} -n 50", file=sys.stderr)
    return code


def cmd_stop_provisioner(args: argparse.Namespace) -> int:
    """Stop the provisioner and Ozwald's Redis (and the target); the services Ozwald runs keep running."""
    done: list[dict[str, Any]] = []
    with systemd() as bus:
        for unit in (TARGET_UNIT, PROVISIONER_UNIT, CACHE_UNIT):
            _report(args, done, _outcome(unit, bus.stop_unit(unit, timeout=JOB_TIMEOUT)))
    if args.json:
        from ozwald.cli.output import print_json

        print_json({"units": done})
    return EXIT_OK


def register(actions: Actions) -> None:
    serve = actions.add("serve", cmd_serve, "run the provisioner (API + reconciler); ozwald.service runs this")
    config_flag(serve)
    provisioner_flag(serve)
    serve.add_argument("--bind", metavar="ADDR", help="API bind address (default: $OZWALD_API_HOST, api.bind, "
                                                      "127.0.0.1)")
    serve.add_argument("--api-port", type=port, metavar="N", help="API port (default: $OZWALD_API_PORT, api.port, "
                                                                 "8000)")
    start = actions.add("start_provisioner", cmd_start_provisioner,
                        "start Ozwald's Redis and the provisioner (ozwald.target) over D-Bus; the port options "
                        "become drop-ins")
    start.add_argument("--api-port", type=port, metavar="N",
                       help="API port (default 8000), written into a drop-in of ozwald.service")
    start.add_argument("--redis-port", type=port, metavar="N",
                       help="also serve Ozwald's Redis on this loopback port (default: unix socket only)")
    start.add_argument("--no-restart", action="store_true", help="leave running units alone")
    json_flag(start, "print the outcome of each unit as JSON")
    stop = actions.add("stop_provisioner", cmd_stop_provisioner,
                       "stop the provisioner and Ozwald's Redis (not the services)")
    json_flag(stop, "print the outcome of each unit as JSON")
