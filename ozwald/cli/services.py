# SPDX-License-Identifier: AGPL-3.0-or-later
"""The services through the API: `list_configured_services`, `list_active_services`, `update_services`,
`plan`, and `logs` (an instance's journal)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ozwald.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Actions,
    Unreachable,
    UsageError,
    api_flags,
    client_of,
    items_flags,
    json_flag,
    parse_item,
)
from ozwald.cli.output import print_json, print_table

if TYPE_CHECKING:
    from ozwald.records import ActiveService, PlanEntry


def cmd_list_configured(args: argparse.Namespace) -> int:
    services = client_of(args).configured_services()
    if args.json:
        print_json(services)
        return EXIT_OK
    rows = [(s.get("name"), s.get("type"), ", ".join(s.get("varieties") or {}) or "-",
             ", ".join(s.get("profiles") or {}) or "-", s.get("description") or "") for s in services]
    print_table(("NAME", "TYPE", "VARIETIES", "PROFILES", "DESCRIPTION"), rows, "(no services configured)")
    return EXIT_OK


def _reason(service: ActiveService) -> str:
    return service.info.reason or ""


def cmd_list_active(args: argparse.Namespace) -> int:
    if args.watch:
        from ozwald.cli.watch import watch

        return watch(client_of(args), as_json=args.json)
    services = client_of(args).active_services()
    if args.json:
        print_json(services)
        return EXIT_OK
    rows = [(s.name, s.status, s.service, s.variety or "-", s.profile or "-", s.info.since or "",
             _reason(s)) for s in services]
    print_table(("INSTANCE", "STATUS", "SERVICE", "VARIETY", "PROFILE", "SINCE", "REASON"), rows,
                "(no active services)")
    return EXIT_OK


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
    entries = client_of(args).plan(read_items(args))
    if args.json:
        print_json(entries)
        return EXIT_OK
    rows = [(e.name, e.action, e.service or "-", e.variety or "-", e.profile or "-", e.reason + _swaps(e))
            for e in entries]
    print_table(("INSTANCE", "ACTION", "SERVICE", "VARIETY", "PROFILE", "WHY"), rows, "(nothing to do)")
    return EXIT_OK


def _swaps(entry: PlanEntry) -> str:
    partners = (entry.fit or {}).get("exclusive_with")
    return f"; on demand, swaps with {', '.join(partners)}" if partners else ""


def _progress(service: ActiveService) -> str:
    what = f"{service.service}/{service.variety or '-'}/{service.profile or '-'}"
    reason = _reason(service)
    return f"{service.name}: {service.status} ({what})" + (f": {reason}" if reason else "")


def cmd_update_services(args: argparse.Namespace) -> int:
    items = read_items(args)
    if args.none and items:
        raise UsageError("--none asks to stop every instance: give no instances with it")
    if not items and not args.none:
        raise UsageError("no instances given: that would stop every instance; say --none if that is what you want")
    client = client_of(args)
    accepted = client.update(items, force=args.force)
    if not args.wait:
        if args.json:
            print_json(accepted)
        else:
            print(accepted.get("message") or accepted.get("status"))
        return EXIT_OK
    generation = int(accepted.get("generation", 0))
    names = [str(item["name"]) for item in items]
    progress = sys.stderr if args.json else sys.stdout  # with --json, stdout holds only the JSON
    print(f"accepted: generation {generation}; waiting for {', '.join(names) or 'nothing'}", file=progress)
    deadline = time.monotonic() + args.timeout
    shown: dict[str, str] = {}
    revision, services = client.watch_active()
    from ozwald.client import MAX_WAIT_S, OzwaldTimeout

    while True:
        by_name = {s.name: s for s in services}
        for name in names:
            service = by_name.get(name)
            line = _progress(service) if service is not None else f"{name}: waiting"
            if shown.get(name) != line:
                print(line, file=progress, flush=True)
            shown[name] = line
        # `idle`: an on-demand instance is ready and waits for its first connection without running
        done = [by_name[n] for n in names if n in by_name and by_name[n].status in ("available", "idle", "failed")
                and (by_name[n].info.generation or 0) >= generation]
        if len(done) == len(names):
            break
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise OzwaldTimeout("deadline")
            revision, services = client.watch_active(revision, wait=min(left, MAX_WAIT_S), deadline=deadline)
        except OzwaldTimeout:
            pending = [n for n in names if n not in {d.name for d in done}]
            print(f"error: timed out after {args.timeout:g} s waiting for {', '.join(pending)}", file=sys.stderr)
            return EXIT_TIMEOUT
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


def register(actions: Actions) -> None:
    configured = actions.add("list_configured_services", cmd_list_configured,
                             "list configured services (through the API)")
    api_flags(configured)
    json_flag(configured)
    active = actions.add("list_active_services", cmd_list_active,
                         "list services active or activating, with their status")
    api_flags(active)
    json_flag(active)
    from ozwald.cli.watch import register as register_watch

    register_watch(active)
    update = actions.add("update_services", cmd_update_services, "replace the desired set of active services")
    items_flags(update, "instances wanted (the service is NAME)")
    update.add_argument("--none", action="store_true",
                        help="the desired set is empty: stop every instance (refused without it when no instance "
                             "is given)")
    update.add_argument("--wait", "-w", action="store_true",
                        help="follow each instance until it is available (idle when on demand) or failed (exit 1 "
                             "if one failed)")
    update.add_argument("--timeout", type=float, default=900.0, metavar="S",
                        help="with --wait: give up after S seconds, exit 4 (default 900)")
    update.add_argument("--force", action="store_true", help="admit even if declared resources do not fit")
    api_flags(update)
    json_flag(update, "print the answer (with --wait: the final statuses) as JSON")
    plan = actions.add("plan", cmd_plan, "show what update_services would do; applies nothing")
    items_flags(plan, "instances wanted (the service is NAME)")
    api_flags(plan)
    json_flag(plan)
    logs = actions.add("logs", cmd_logs, "show an instance's log (its container output, from the journal)")
    logs.add_argument("instance", help="the instance name (as in list_active_services)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=100, metavar="N", help="how many lines (default 100)")
    json_flag(logs, "the journal's JSON export format, one entry a line")
