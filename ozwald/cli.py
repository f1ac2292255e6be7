# SPDX-License-Identifier: AGPL-3.0-or-later
"""The `ozwald` command line.

Exit codes (also in `ozwald --help` and the man page):
  0  success
  1  the operation ran but the outcome is bad: an instance failed, the provisioner is unhealthy, a
     doctor check failed
  2  an operator error: bad settings (each problem as file:line), an unknown name, a bad argument, a
     request the API refused (4xx)
  3  something needed cannot be reached: the API, systemd's D-Bus, Redis
  4  timed out waiting (`update_services --wait --timeout`)
Errors are one line each, without a traceback; a traceback means a bug in Ozwald.

The parser is built from the standard library alone, so that the man page and the bash completion
can be generated from it at package build time (`python3 -m ozwald.cli_docs`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ozwald import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4

EXIT_CODES_TEXT = """\
exit status:
  0  success
  1  the operation ran but the outcome is bad (an instance failed, the provisioner is unhealthy,
     a doctor check failed)
  2  operator error: settings that do not validate (file:line), an unknown name, a bad argument,
     a request the API refused
  3  something needed cannot be reached: the API, systemd (D-Bus), Redis
  4  timed out waiting (update_services --wait)"""

ENVIRONMENT_TEXT = """\
environment:
  OZWALD_CONFIG       the settings file (default ./ozwald.yml, then /etc/ozwald/ozwald.yml)
  OZWALD_SYSTEM_KEY   the API token; when unset, read from /etc/ozwald/ozwald.env if readable
  OZWALD_BASE         the API's base URL (default http://127.0.0.1:PORT)
  OZWALD_API_PORT     the API port when no option gives one"""

PROVISIONER_UNIT = "ozwald.service"
CACHE_UNIT = "ozwald-redis.service"
TARGET_UNIT = "ozwald.target"
UNIT_DIR = Path("/etc/systemd/system")
DROP_IN_NAME = "50-cli.conf"
ENV_FILE = Path("/etc/ozwald/ozwald.env")
DEFAULT_API_PORT = 8000
JOB_TIMEOUT = 120.0


class UsageError(Exception):
    """An operator error: printed without a traceback, exit status 2."""


class Unreachable(Exception):
    """Something the command needs cannot be reached: exit status 3."""


# -- settings ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> tuple[str, Any]:
    from ozwald.config import find_config_path, load_settings

    path = find_config_path(args.config)
    return str(path), load_settings(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    path, settings = _settings(args)
    if args.quiet:
        return EXIT_OK
    print(f"{path}: OK")
    print(f"  hosts: {', '.join(h.name for h in settings.hosts) or 'none'}")
    print(f"  provisioners: {', '.join(p.name for p in settings.provisioners) or 'none'}")
    print(f"  services: {len(settings.services)}")
    for service in settings.services:
        varieties = ", ".join(service.varieties) or "-"
        profiles = ", ".join(service.profiles) or "-"
        print(f"    {service.name} ({service.type}) varieties: {varieties}; profiles: {profiles}")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from ozwald.config import resolve
    from ozwald.quadlet import render_unit
    from ozwald.quadlet.keys import NEWEST_KNOWN, parse_version

    _, settings = _settings(args)
    spec = resolve(settings, args.service, args.variety, args.profile)
    if spec.type != "container":
        raise UsageError(f"service {spec.service!r} is of type {spec.type!r}; only container services have units")
    version = parse_version(args.podman_version) if args.podman_version else NEWEST_KNOWN
    unit = render_unit(spec, args.name or args.service, version)
    for warning in unit.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(unit.text)
    return EXIT_OK


def _identity(args: argparse.Namespace) -> tuple[str, Any, Any]:
    from ozwald.state import select_provisioner

    path, settings = _settings(args)
    return path, settings, select_provisioner(settings, args.provisioner)


def _doctor_findings(settings: Any, provisioner: str | None) -> list[Any]:
    from ozwald.doctor import run_checks

    _load_env_file()  # the Redis password of the packaged install
    return list(run_checks(settings, provisioner))


def cmd_doctor(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ozwald.cli_output import print_json

    _, settings = _settings(args)
    findings = _doctor_findings(settings, args.provisioner)
    if args.json:
        print_json([asdict(f) for f in findings])
    else:
        for finding in findings:
            print(finding.line())
    return EXIT_FAILED if any(f.level == "fail" for f in findings) else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ozwald.provisioner.process import serve

    path, settings, identity = _identity(args)
    return serve(settings, identity, host=args.bind, port=args.api_port, config_path=path)


# -- systemd: Ozwald's own units ------------------------------------------------------------------


def drop_in_path(unit: str, unit_dir: Path | None = None) -> Path:
    return (unit_dir or UNIT_DIR) / f"{unit}.d" / DROP_IN_NAME


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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        changed.append(path)
    return changed


def drop_in_port(unit: str, variable: str, unit_dir: Path | None = None) -> int | None:
    """The port an earlier start_provisioner wrote, if any."""
    try:
        text = drop_in_path(unit, unit_dir).read_text()
    except OSError:
        return None
    match = re.search(rf"^Environment={variable}=(\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _systemd() -> Any:
    from ozwald.systemd import BusUnavailable, SystemdClient

    try:
        return SystemdClient()
    except BusUnavailable as exc:
        raise Unreachable(f"systemd: {exc}") from exc


def _report(unit: str, outcome: Any) -> None:
    print(f"{unit}: {outcome.operation} {outcome.result} ({outcome.seconds:.2f} s)")


def cmd_start_provisioner(args: argparse.Namespace) -> int:
    """Write the port drop-ins, then start Ozwald's Redis, the provisioner and ozwald.target over D-Bus.

    Without --no-restart, running units are restarted (so new ports apply); with it they are left alone.
    The provisioner's start job ends when it sends READY=1: its API answers."""
    for path in write_drop_ins(args):
        print(f"wrote {path}")
    code = EXIT_OK
    with _systemd() as systemd:
        systemd.reload()
        for unit in (CACHE_UNIT, PROVISIONER_UNIT):
            running = systemd.unit_state(unit).active_state in ("active", "reloading", "activating")
            if running and args.no_restart:
                print(f"{unit}: left running (--no-restart)")
                continue
            outcome = (systemd.restart_unit(unit, timeout=JOB_TIMEOUT) if running
                       else systemd.start_unit(unit, timeout=JOB_TIMEOUT))
            _report(unit, outcome)
            if not outcome.ok:
                code = EXIT_FAILED
        _report(TARGET_UNIT, systemd.start_unit(TARGET_UNIT, timeout=JOB_TIMEOUT))
    if code != EXIT_OK:
        print(f"see: journalctl -u {PROVISIONER_UNIT} -u {CACHE_UNIT} -n 50", file=sys.stderr)
    return code


def cmd_stop_provisioner(args: argparse.Namespace) -> int:
    """Stop the provisioner and Ozwald's Redis (and the target); the services Ozwald runs keep running."""
    with _systemd() as systemd:
        for unit in (TARGET_UNIT, PROVISIONER_UNIT, CACHE_UNIT):
            _report(unit, systemd.stop_unit(unit, timeout=JOB_TIMEOUT))
    return EXIT_OK


# -- the API ------------------------------------------------------------------------------------


def _load_env_file(path: Path | None = None) -> None:
    """OZWALD_* variables the packages wrote to /etc/ozwald/ozwald.env (mode 0600, so: root), for the
    ones the environment does not set. Nothing is printed: the file holds secrets."""
    path = path or Path(os.environ.get("OZWALD_ENV_FILE", str(ENV_FILE)))
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and key.startswith("OZWALD_") and key not in os.environ:
            os.environ[key] = value.strip().strip('"').strip("'")


def api_port(args: argparse.Namespace) -> int:
    """--port, else --api-port, else $OZWALD_API_PORT, else the start_provisioner drop-in, else 8000."""
    port = getattr(args, "port", None) or getattr(args, "api_port", None)
    if port:
        return int(port)
    from_env = os.environ.get("OZWALD_API_PORT")
    if from_env and from_env.isdigit():
        return int(from_env)
    return drop_in_port(PROVISIONER_UNIT, "OZWALD_API_PORT") or DEFAULT_API_PORT


def _client(args: argparse.Namespace, timeout: float = 10.0) -> Any:
    from ozwald.api.auth import key_from_env
    from ozwald.client import OzwaldClient

    _load_env_file()
    base = os.environ.get("OZWALD_BASE") or f"http://127.0.0.1:{api_port(args)}"
    return OzwaldClient(base, key_from_env(), timeout=timeout)


def cmd_list_configured(args: argparse.Namespace) -> int:
    from ozwald.cli_output import print_json, print_table

    services = _client(args).configured_services()
    if args.json:
        print_json(services)
        return EXIT_OK
    rows = [(s.get("name"), s.get("type"), ", ".join(s.get("varieties") or {}) or "-",
             ", ".join(s.get("profiles") or {}) or "-", s.get("description") or "") for s in services]
    print_table(("NAME", "TYPE", "VARIETIES", "PROFILES", "DESCRIPTION"), rows, "(no services configured)")
    return EXIT_OK


def _reason(service: Any) -> str:
    info = service.info if isinstance(service.info, dict) else {}
    return str(info.get("reason") or "")


def cmd_list_active(args: argparse.Namespace) -> int:
    from ozwald.cli_output import print_json, print_table

    services = _client(args).active_services()
    if args.json:
        print_json(services)
        return EXIT_OK
    rows = [(s.name, s.status, s.service, s.variety or "-", s.profile or "-", (s.info or {}).get("since") or "",
             _reason(s)) for s in services]
    print_table(("INSTANCE", "STATUS", "SERVICE", "VARIETY", "PROFILE", "SINCE", "REASON"), rows,
                "(no active services)")
    return EXIT_OK


def cmd_show_host_resources(args: argparse.Namespace) -> int:
    from ozwald.cli_output import print_json, print_table

    if args.use_api:
        view: dict[str, Any] = dict(_client(args).host_resources())
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
    from ozwald.cli_output import print_json

    report: dict[str, Any] = {"units": {}, "api": {}, "redis": {}, "doctor": {}}
    code = EXIT_OK
    try:
        with _systemd() as systemd:
            for unit in (TARGET_UNIT, PROVISIONER_UNIT, CACHE_UNIT):
                state = systemd.unit_state(unit)
                report["units"][unit] = f"{state.active_state} ({state.sub_state})"
    except Exception as exc:  # status reports what it can reach
        report["units"] = {"error": f"systemd not reachable: {exc}"}
    from ozwald.client import OzwaldAPIError, OzwaldClientError

    try:
        client = _client(args, timeout=5.0)
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
        _, settings = _settings(args)
    except Exception as exc:  # no settings here: Redis and doctor need them
        report["redis"] = report["doctor"] = {"status": "skipped", "detail": f"no settings: {exc}"}
    if settings is not None:
        report["redis"] = _redis_ping(settings, getattr(args, "provisioner", None))
        findings = _doctor_findings(settings, getattr(args, "provisioner", None))
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

    _load_env_file()
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


# -- changing the desired set ------------------------------------------------------------------


def parse_item(text: str) -> dict[str, str]:
    """NAME[:VARIETY[:PROFILE]]; an empty VARIETY (`name::profile`) lets the provisioner pick it."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"{text!r}: expected NAME[:VARIETY[:PROFILE]]")
    item = {"name": parts[0]}
    for key, value in zip(("variety", "profile"), parts[1:], strict=False):
        if value:
            item[key] = value
    return item


def read_items(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.file and args.items:
        raise UsageError("give instances as arguments or --file, not both")
    if not args.file:
        return [parse_item(text) for text in args.items]
    import yaml

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        data = yaml.safe_load(text)
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{args.file}:{mark.line + 1}" if mark is not None else args.file
        raise UsageError(f"{where}: not YAML/JSON: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = []
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise UsageError(f"{args.file}: expected a list of {{name, variety, profile}} items")
    return data


def cmd_plan(args: argparse.Namespace) -> int:
    from ozwald.cli_output import print_json, print_table

    entries = _client(args).plan(read_items(args))
    if args.json:
        print_json(entries)
        return EXIT_OK
    rows = [(e.name, e.action, e.service or "-", e.variety or "-", e.profile or "-", e.reason) for e in entries]
    print_table(("INSTANCE", "ACTION", "SERVICE", "VARIETY", "PROFILE", "WHY"), rows, "(nothing to do)")
    return EXIT_OK


def _progress(service: Any) -> str:
    what = f"{service.service}/{service.variety or '-'}/{service.profile or '-'}"
    reason = _reason(service)
    return f"{service.name}: {service.status} ({what})" + (f": {reason}" if reason else "")


def cmd_update_services(args: argparse.Namespace) -> int:
    from ozwald.cli_output import print_json

    items = read_items(args)
    client = _client(args)
    accepted = client.update(items, force=args.force)
    if not args.wait:
        if args.json:
            print_json(accepted)
        else:
            print(accepted.get("message") or accepted.get("status"))
        return EXIT_OK
    generation = int(accepted.get("generation", 0))
    names = [str(item["name"]) for item in items]
    if not args.json:
        print(f"accepted: generation {generation}; waiting for {', '.join(names) or 'nothing'}")
    deadline = time.monotonic() + args.timeout
    shown: dict[str, str] = {}
    revision, services = client.watch_active()
    while True:
        by_name = {s.name: s for s in services}
        for name in names:
            service = by_name.get(name)
            line = _progress(service) if service is not None else f"{name}: waiting"
            if shown.get(name) != line and not args.json:
                print(line, flush=True)
            shown[name] = line
        done = [by_name[n] for n in names if n in by_name and by_name[n].status in ("available", "failed")
                and int((by_name[n].info or {}).get("generation", 0)) >= generation]
        if len(done) == len(names):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            pending = [n for n in names if n not in {d.name for d in done}]
            print(f"error: timed out after {args.timeout:g} s waiting for {', '.join(pending)}", file=sys.stderr)
            return EXIT_TIMEOUT
        revision, services = client.watch_active(revision, wait=min(left, 30.0))
    failed = [s for s in done if s.status == "failed"]
    if args.json:
        print_json(done)
    for service in failed:
        print(f"error: {service.name} failed: {_reason(service) or 'no reason given'}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """The instance's journal (its container's output and systemd's lines), through journalctl."""
    from ozwald.quadlet.render import unit_name

    argv = ["journalctl", "--no-pager", "-u", unit_name(args.instance), "-n", str(args.lines)]
    if args.follow:
        argv.append("-f")
    if args.json:
        argv += ["-o", "json"]
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - a fixed program with a validated unit name
    except OSError as exc:
        raise Unreachable(f"journalctl: {exc.strerror}") from exc
    return EXIT_OK  # not reached


# -- the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ozwald", description="Podman/systemd-native provisioner for AI services.",
        epilog=EXIT_CODES_TEXT + "\n\n" + ENVIRONMENT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ozwald {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="settings file (default: $OZWALD_CONFIG, ./ozwald.yml, /etc/ozwald/ozwald.yml)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    served = argparse.ArgumentParser(add_help=False)
    served.add_argument("--provisioner", metavar="NAME",
                        help="which provisioners[] entry this is (default: $OZWALD_PROVISIONER, else the one "
                             "whose host is this machine, else the only one)")
    ports = argparse.ArgumentParser(add_help=False)
    ports.add_argument("--api-port", type=int, metavar="N",
                       help="API port (default 8000; start_provisioner writes it into a drop-in)")
    ports.add_argument("--redis-port", type=int, metavar="N",
                       help="also serve Ozwald's Redis on this loopback port (default: unix socket only)")
    ports.add_argument("--port", type=int, metavar="N", help="API port for list/show actions (default: --api-port)")
    ports.add_argument("--no-restart", action="store_true", help="leave running units alone")
    ports.add_argument("--use-api", action="store_true", help="ask the running provisioner (show_host_resources)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, func: Any, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, parents=list(parents), help=text, description=text,
                                 epilog=EXIT_CODES_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub

    check = action("check_config", cmd_check_config, "validate the settings file (errors as file:line)", common)
    check.add_argument("--quiet", "-q", action="store_true", help="print nothing when the file is valid")
    render = action("render", cmd_render, "print the Quadlet unit of a service", common)
    render.add_argument("service", help="a service of the settings file")
    render.add_argument("--variety", help="one of the service's varieties")
    render.add_argument("--profile", help="one of the service's profiles")
    render.add_argument("--name", help="instance name (default: the service name)")
    render.add_argument("--podman-version", metavar="X.Y", help="render for this Podman version (default: newest)")
    serve = action("serve", cmd_serve, "run the provisioner (API + reconciler); ozwald.service runs this",
                   common, served)
    serve.add_argument("--bind", metavar="ADDR", help="API bind address (default: $OZWALD_API_HOST, api.bind, "
                                                      "127.0.0.1)")
    serve.add_argument("--api-port", type=int, metavar="N", help="API port (default: $OZWALD_API_PORT, api.port, "
                                                                 "8000)")
    action("doctor", cmd_doctor, "preflight checks, each with its fix", common, served, as_json)
    for name, func, text in (
        ("start_provisioner", cmd_start_provisioner,
         "start Ozwald's Redis and the provisioner (ozwald.target) over D-Bus; the port options become drop-ins"),
        ("stop_provisioner", cmd_stop_provisioner, "stop the provisioner and Ozwald's Redis (not the services)"),
        ("list_configured_services", cmd_list_configured, "list configured services (through the API)"),
        ("list_active_services", cmd_list_active, "list services active or activating, with their status"),
        ("show_host_resources", cmd_show_host_resources, "CPU/RAM/GPU/VRAM of the host (--use-api: through the API)"),
        ("status", cmd_status, "Ozwald's units, API health, Redis ping and the doctor's summary"),
    ):
        action(name, func, text, common, ports, as_json, served)
    for name, func, text in (
        ("update_services", cmd_update_services, "replace the desired set of active services"),
        ("plan", cmd_plan, "show what update_services would do; applies nothing"),
    ):
        sub = action(name, func, text, common, ports, as_json)
        sub.add_argument("items", nargs="*", metavar="NAME[:VARIETY[:PROFILE]]",
                         help="instances wanted (the service is NAME); none and no --file: stop everything")
        sub.add_argument("--file", "-f", metavar="FILE",
                         help="the desired set as a YAML/JSON list of {name, service, variety, profile} ('-': stdin)")
        if name == "update_services":
            sub.add_argument("--wait", "-w", action="store_true",
                             help="follow each instance until it is available or failed (exit 1 if one failed)")
            sub.add_argument("--timeout", type=float, default=900.0, metavar="S",
                             help="with --wait: give up after S seconds, exit 4 (default 900)")
            sub.add_argument("--force", action="store_true", help="admit even if declared resources do not fit")
    logs = action("logs", cmd_logs, "show an instance's log (its container output, from the journal)", as_json)
    logs.add_argument("instance", help="the instance name (as in list_active_services)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="how many lines (default 100)")
    from ozwald.cli_profile import register as register_profile

    register_profile(actions, common, ports)
    from ozwald import cli_export, cli_fleet

    cli_export.add_parser(actions, common)
    cli_fleet.add_parser(actions, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, lines = classify(exc)
        if code is None:
            raise
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return code


def classify(exc: Exception) -> tuple[int | None, list[str]]:
    """The exit status and message lines for an error an operator can act on; (None, []) for a bug."""
    from ozwald.config import ConfigError, ResolveError
    from ozwald.quadlet import RenderError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE, [str(issue) for issue in exc.issues]
    if isinstance(exc, ResolveError):
        return EXIT_USAGE, [f"{exc.field}: {exc.message}"]
    if isinstance(exc, RenderError | UsageError | ValueError):
        return EXIT_USAGE, [str(exc)]
    if isinstance(exc, Unreachable):
        return EXIT_UNREACHABLE, [str(exc)]
    from ozwald.api.auth import ApiKeyError
    from ozwald.client import OzwaldAPIError, OzwaldConnectionError
    from ozwald.state import IdentityError, StateError, StateUnavailable
    from ozwald.systemd import BusUnavailable, JobFailed, SystemdError

    if isinstance(exc, OzwaldAPIError):
        import json

        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return (EXIT_USAGE if 400 <= exc.status < 500 else EXIT_FAILED), [f"the API answered {exc.status}: {detail}"]
    if isinstance(exc, OzwaldConnectionError):
        return EXIT_UNREACHABLE, [f"{exc} (is ozwald.service running? `ozwald status`)"]
    if isinstance(exc, BusUnavailable | StateUnavailable):
        return EXIT_UNREACHABLE, [str(exc)]
    if isinstance(exc, JobFailed):
        return EXIT_FAILED, [str(exc)]
    if isinstance(exc, ApiKeyError | IdentityError | StateError | SystemdError):
        return EXIT_USAGE, [str(exc)]
    return None, []


if __name__ == "__main__":
    sys.exit(main())
