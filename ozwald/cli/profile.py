# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald profile`: queue profiling runs, list the queue, show results, and follow a run (`--wait`).

    ozwald profile NAME[:VARIETY[:PROFILE]] ...   queue these (the service is NAME)
    ozwald profile --all                          every container service × variety × profile
    ozwald profile                                the queue (position, state, phase)
    ozwald profile --results                      the results (stale ones marked)

With `--wait`, the queued items are followed until each has a result; the exit status is 1 if a run
failed, 4 on `--timeout`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ozwald.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Actions,
    api_flags,
    client_of,
    json_flag,
    parse_item,
)


def _what(entry: dict[str, Any]) -> str:
    return f"{entry.get('service')}/{entry.get('variety') or '-'}/{entry.get('profile') or '-'}"


def result_line(result: dict[str, Any]) -> str:
    what = _what(result)
    if result.get("outcome") == "failed":
        return f"{what}: failed: {result.get('reason')}"
    vram = ", ".join(f"{gpu} {mib:g} MiB" for gpu, mib in (result.get("vram_peak_mib") or {}).items()) or "none"
    stale = "  (stale: the settings changed since)" if result.get("stale") else ""
    return (f"{what}: ready in {result.get('ready_s')} s ({result.get('ready_by')}), RAM peak "
            f"{result.get('ram_peak_mib')} MiB, steady {result.get('ram_steady_mib')} MiB, CPU "
            f"{result.get('cpu_cores_steady')} cores steady, VRAM {vram}; spec {result.get('spec_hash')}, "
            f"{result.get('finished_at')}{stale}")


def queue_line(entry: dict[str, Any]) -> str:
    progress = entry.get("progress") or {}
    return (f"{entry.get('position')}: {_what(entry)} {entry.get('state')} ({progress.get('phase')}); request "
            f"{entry.get('request_id')}, {progress.get('request_items_done')}/{progress.get('request_items')} done")


def cmd_profile(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.results:
        results = client.profile_results()
        if args.json:
            print(json.dumps(results, indent=2, sort_keys=True))
        for result in [] if args.json else results:
            print(result_line(result))
        return EXIT_OK
    if not args.items and not args.all:
        queued = client.profile_requests()
        if args.json:
            print(json.dumps(queued, indent=2, sort_keys=True))
        elif not queued:
            print("(no profiling requests)")
        for entry in [] if args.json else queued:
            print(queue_line(entry))
        return EXIT_OK
    body: dict[str, Any] = {"all": True} if args.all else {"services": [parse_item(t) for t in args.items]}
    accepted = client.enqueue_profile(body)
    request_id = accepted["request_id"]
    items = accepted.get("items") or []
    if not args.wait:
        print(json.dumps(accepted, indent=2, sort_keys=True) if args.json else
              f"queued request {request_id}: " + ", ".join(_what(i) for i in items))
        return EXIT_OK
    print(f"queued request {request_id}: {len(items)} item(s); waiting", flush=True)
    deadline = time.monotonic() + args.timeout
    shown: dict[str, str] = {}
    while True:
        results = [r for r in client.profile_results() if r.get("request_id") == request_id]
        for entry in client.profile_requests():
            if entry.get("request_id") == request_id:
                line = queue_line(entry)
                if shown.get(entry["item_id"]) != line:
                    print(line, flush=True)
                    shown[entry["item_id"]] = line
        if len(results) >= len(items):
            break
        if time.monotonic() > deadline:
            print(f"timed out after {args.timeout:g} s; {len(results)} of {len(items)} done", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(1.0)
    for result in results:
        print(json.dumps(result, sort_keys=True) if args.json else result_line(result))
    return EXIT_FAILED if any(r.get("outcome") == "failed" for r in results) else EXIT_OK


def register(actions: Actions) -> None:
    sub = actions.add("profile", cmd_profile, "queue profiling runs, list the queue, show results")
    sub.add_argument("items", nargs="*", metavar="NAME[:VARIETY[:PROFILE]]",
                     help="what to profile (the service is NAME)")
    sub.add_argument("--all", action="store_true", help="every container service × variety × profile")
    sub.add_argument("--results", action="store_true", help="show the results")
    sub.add_argument("--wait", "-w", action="store_true", help="follow the queued items until each has a result")
    sub.add_argument("--timeout", type=float, default=3600.0, metavar="S", help="with --wait: give up after S s")
    api_flags(sub)
    json_flag(sub, "print the queue, the results or the answer as JSON")
