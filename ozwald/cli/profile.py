# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald profile`: queue profiling runs, list the queue, show results, and follow a run (`--wait`).

    ozwald profile NAME[:VARIETY[:PROFILE]] ...   queue these (the service is NAME)
    ozwald profile --all                          every container service × variety × profile
    ozwald profile                                the queue (position, state, phase)
    ozwald profile --results                      the results (stale ones marked)

With `--wait`, the queued items are followed (with the API's blocking queries, no polling) until each
has a result; the exit status is 1 if a run failed, 4 on `--timeout`. With `--json`, stdout holds only
JSON (the results), the progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
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
from ozwald.cli.output import print_json


def _what(entry: Mapping[str, Any]) -> str:
    return f"{entry.get('service')}/{entry.get('variety') or '-'}/{entry.get('profile') or '-'}"


def result_line(result: Mapping[str, Any]) -> str:
    what = _what(result)
    if result.get("outcome") == "failed":
        return f"{what}: failed: {result.get('reason')}"
    vram = ", ".join(f"{gpu} {mib:g} MiB" for gpu, mib in (result.get("vram_peak_mib") or {}).items()) or "none"
    stale = "  (stale: the settings changed since)" if result.get("stale") else ""
    return (f"{what}: ready in {result.get('ready_s')} s ({result.get('ready_by')}), RAM peak "
            f"{result.get('ram_peak_mib')} MiB, steady {result.get('ram_steady_mib')} MiB, CPU "
            f"{result.get('cpu_cores_steady')} cores steady, VRAM {vram}; spec {result.get('spec_hash')}, "
            f"{result.get('finished_at')}{stale}")


def queue_line(entry: Mapping[str, Any]) -> str:
    progress = entry.get("progress") or {}
    return (f"{entry.get('position')}: {_what(entry)} {entry.get('state')} ({progress.get('phase')}); request "
            f"{entry.get('request_id')}, {progress.get('request_items_done')}/{progress.get('request_items')} done")


def cmd_profile(args: argparse.Namespace) -> int:
    client = client_of(args)
    if args.results:
        results = client.profile_results()
        if args.json:
            print_json(results)
        for result in [] if args.json else results:
            print(result_line(result))
        return EXIT_OK
    if not args.items and not args.all:
        queued = client.profile_requests()
        if args.json:
            print_json(queued)
        elif not queued:
            print("(no profiling requests)")
        for entry in [] if args.json else queued:
            print(queue_line(entry))
        return EXIT_OK
    body: dict[str, Any] = {"all": True} if args.all else {"services": [parse_item(t) for t in args.items]}
    revision, _ = client.watch_profile()  # before queuing: no change can slip between the two
    accepted = client.enqueue_profile(body)
    request_id = accepted["request_id"]
    items = accepted.get("items") or []
    progress = sys.stderr if args.json else sys.stdout  # with --json, stdout holds only the JSON
    if not args.wait:
        if args.json:
            print_json(accepted)
        else:
            print(f"queued request {request_id}: " + ", ".join(_what(i) for i in items))
        return EXIT_OK
    print(f"queued request {request_id}: {len(items)} item(s); waiting", file=progress, flush=True)
    deadline = time.monotonic() + args.timeout
    shown: dict[str, str] = {}
    from ozwald.client import MAX_WAIT_S, OzwaldTimeout

    while True:
        # Blocking queries: the server answers when the queue or the results change (or after the wait).
        try:
            revision, queue = client.watch_profile(revision, wait=min(max(deadline - time.monotonic(), 0.0),
                                                                      MAX_WAIT_S), deadline=deadline)
        except OzwaldTimeout:
            queue = None
        mine = [entry for entry in queue or () if entry.get("request_id") == request_id]
        for entry in mine:
            line = queue_line(entry)
            key = str(entry.get("item_id") or entry.get("service"))
            if shown.get(key) != line:
                print(line, file=progress, flush=True)
                shown[key] = line
        if queue is not None and not mine:  # each item left the queue: its result is recorded
            break
        if queue is None or time.monotonic() >= deadline:
            print(f"error: timed out after {args.timeout:g} s waiting for request {request_id}", file=sys.stderr)
            return EXIT_TIMEOUT
    results = [r for r in client.profile_results() if r.get("request_id") == request_id]
    if args.json:
        print_json(results)
    for result in [] if args.json else results:
        print(result_line(result))
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
