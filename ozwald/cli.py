"""The `ozwald` command line.

Errors an operator can fix (bad settings, unknown names) are printed as one line each, without a
traceback, and exit with status 2; a traceback means a bug in Ozwald.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ozwald import __version__
from ozwald.config import ConfigError, ResolveError, find_config_path, load_settings, resolve
from ozwald.config.model import Settings
from ozwald.quadlet import RenderError, render_unit
from ozwald.quadlet.keys import NEWEST_KNOWN, parse_version

EXIT_USAGE = 2


class UsageError(Exception):
    """An operator error: printed without a traceback, exit status 2."""


def _settings(args: argparse.Namespace) -> tuple[str, Settings]:
    path = find_config_path(args.config)
    return str(path), load_settings(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    path, settings = _settings(args)
    print(f"{path}: OK")
    print(f"  hosts: {', '.join(h.name for h in settings.hosts) or 'none'}")
    print(f"  provisioners: {', '.join(p.name for p in settings.provisioners) or 'none'}")
    print(f"  services: {len(settings.services)}")
    for service in settings.services:
        varieties = ", ".join(service.varieties) or "-"
        profiles = ", ".join(service.profiles) or "-"
        print(f"    {service.name} ({service.type}) varieties: {varieties}; profiles: {profiles}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    _, settings = _settings(args)
    spec = resolve(settings, args.service, args.variety, args.profile)
    if spec.type != "container":
        raise UsageError(f"service {spec.service!r} is of type {spec.type!r}; only container services have units")
    version = parse_version(args.podman_version) if args.podman_version else NEWEST_KNOWN
    unit = render_unit(spec, args.name or args.service, version)
    for warning in unit.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(unit.text)
    return 0


def _identity(args: argparse.Namespace) -> tuple[Settings, Any]:
    from ozwald.state import select_provisioner

    _, settings = _settings(args)
    return settings, select_provisioner(settings, args.provisioner)


def cmd_doctor(args: argparse.Namespace) -> int:
    from ozwald.doctor import run_checks

    _, settings = _settings(args)
    findings = run_checks(settings, args.provisioner)
    for finding in findings:
        print(finding.line())
    return 1 if any(f.level == "fail" for f in findings) else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ozwald.provisioner.process import serve

    settings, identity = _identity(args)
    return serve(settings, identity, host=args.bind, port=args.api_port)


PROVISIONER_UNIT = "ozwald.service"
CACHE_UNIT = "redis-server.service"


def _manage(args: argparse.Namespace, operation: str) -> int:
    from ozwald.systemd import SystemdClient

    units = [CACHE_UNIT, PROVISIONER_UNIT] if operation != "stop" else [PROVISIONER_UNIT, CACHE_UNIT]
    with SystemdClient() as systemd:
        for unit in units:
            if operation == "start":
                running = systemd.unit_state(unit).active_state == "active"
                outcome = (systemd.start_unit(unit, timeout=120) if args.no_restart or not running
                           else systemd.restart_unit(unit, timeout=120))
            else:
                outcome = systemd.stop_unit(unit, timeout=120)
            print(f"{unit}: {outcome.operation} {outcome.result} ({outcome.seconds:.2f} s)")
    return 0


def cmd_start_provisioner(args: argparse.Namespace) -> int:
    """Start (or, without --no-restart, restart) the cache and the provisioner units over D-Bus."""
    return _manage(args, "start")


def cmd_stop_provisioner(args: argparse.Namespace) -> int:
    return _manage(args, "stop")


def _client(args: argparse.Namespace) -> Any:
    from ozwald.api.auth import key_from_env
    from ozwald.client import OzwaldClient

    port = args.port or args.api_port or 8000
    base = os.environ.get("OZWALD_BASE") or f"http://127.0.0.1:{port}"
    return OzwaldClient(base, key_from_env())


def _print_json(value: Any) -> None:
    from pydantic import BaseModel

    def plain(item: Any) -> Any:
        return item.model_dump(mode="json") if isinstance(item, BaseModel) else item

    data = [plain(i) for i in value] if isinstance(value, list) else plain(value)
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_list_configured(args: argparse.Namespace) -> int:
    _print_json(_client(args).configured_services())
    return 0


def cmd_list_active(args: argparse.Namespace) -> int:
    services = _client(args).active_services()
    for service in services:
        reason = service.info.get("reason") if isinstance(service.info, dict) else None
        what = f"{service.service}/{service.variety or '-'}/{service.profile or '-'}"
        line = f"{service.name:<24} {service.status:<10} {what}"
        print(line + (f"  {reason}" if reason else ""))
    return 0


def cmd_show_host_resources(args: argparse.Namespace) -> int:
    if args.use_api:
        _print_json(_client(args).host_resources())
        return 0
    from ozwald.resources import HostResourceMonitor, host_resources_view

    with HostResourceMonitor() as monitor:
        _print_json(dict(host_resources_view(monitor.snapshot())))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ozwald.client import OzwaldAPIError, OzwaldClientError

    code = 0
    try:
        health = _client(args).health()
        print(f"provisioner: {json.dumps(health)}")
    except OzwaldAPIError as exc:
        print(f"provisioner: unhealthy: {json.dumps(exc.detail)}")
        code = 1
    except OzwaldClientError as exc:
        print(f"provisioner: not reachable: {exc}")
        code = 1
    try:
        _, settings = _settings(args)
    except ConfigError:
        return code  # no settings here: the preflight section needs them
    from ozwald.doctor import run_checks

    print("preflight:")
    for finding in run_checks(settings, getattr(args, "provisioner", None)):
        if finding.level != "ok":
            print("  " + finding.line().replace("\n", "\n  "))
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ozwald", description="Podman/systemd-native provisioner for AI services")
    parser.add_argument("--version", action="version", version=f"ozwald {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file (default: $OZWALD_CONFIG, ./ozwald.yml, "
                        "/etc/ozwald/ozwald.yml)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    check = actions.add_parser("check_config", parents=[common], help="validate the settings file")
    check.set_defaults(func=cmd_check_config)

    render = actions.add_parser("render", parents=[common], help="print the Quadlet unit of a service")
    render.add_argument("service")
    render.add_argument("--variety")
    render.add_argument("--profile")
    render.add_argument("--name", help="instance name (default: the service name)")
    render.add_argument("--podman-version", help="render for this Podman version (default: newest known)")
    render.set_defaults(func=cmd_render)

    served = argparse.ArgumentParser(add_help=False)
    served.add_argument("--provisioner", help="which provisioners[] entry this is (default: $OZWALD_PROVISIONER, "
                                              "else the one whose host is this machine, else the only one)")
    ports = argparse.ArgumentParser(add_help=False)
    ports.add_argument("--api-port", type=int, help="API port (default 8000, or the settings' api.port)")
    ports.add_argument("--redis-port", type=int, default=6379, help="Redis port (default 6379)")
    ports.add_argument("--port", type=int, help="API port for list/show actions (default: --api-port)")
    ports.add_argument("--no-restart", action="store_true", help="leave running parts alone")
    ports.add_argument("--use-api", action="store_true", help="ask the running provisioner")

    serve = actions.add_parser("serve", parents=[common, served], help="run the provisioner (API + reconciler)")
    serve.add_argument("--bind", help="API bind address (default: $OZWALD_API_HOST or api.bind, 127.0.0.1)")
    serve.add_argument("--api-port", type=int, help="API port (default: $OZWALD_API_PORT or api.port, 8000)")
    serve.set_defaults(func=cmd_serve)
    doctor = actions.add_parser("doctor", parents=[common, served], help="preflight checks, each with its fix")
    doctor.set_defaults(func=cmd_doctor)
    for name, func, text in (
        ("start_provisioner", cmd_start_provisioner, "start the provisioner and its cache"),
        ("stop_provisioner", cmd_stop_provisioner, "stop them"),
        ("list_configured_services", cmd_list_configured, "list configured services (through the API)"),
        ("list_active_services", cmd_list_active, "list services active or activating"),
        ("show_host_resources", cmd_show_host_resources, "CPU/RAM/GPU/VRAM of the host (--use-api: through the API)"),
        ("status", cmd_status, "provisioner health"),
    ):
        sub = actions.add_parser(name, parents=[common, ports], help=text)
        sub.set_defaults(func=func)
    from ozwald.cli_profile import register as register_profile

    register_profile(actions, common, ports)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
    except ResolveError as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
    except (RenderError, UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except _operator_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _operator_errors() -> tuple[type[Exception], ...]:
    from ozwald.api.auth import ApiKeyError
    from ozwald.state import IdentityError, StateError
    from ozwald.systemd import BusUnavailable, JobFailed, SystemdError

    return (ApiKeyError, IdentityError, StateError, BusUnavailable, JobFailed, SystemdError)


if __name__ == "__main__":
    sys.exit(main())
