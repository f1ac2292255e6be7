# SPDX-License-Identifier: AGPL-3.0-or-later
"""`wake` and `sleep`: an on-demand instance's container started before its traffic comes, or stopped now
rather than after `idle_stop` (through the API: POST /srv/services/active/<name>/wake and /sleep)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ozwald.cli.common import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, Actions, api_flags, client_of, json_flag
from ozwald.cli.output import print_json

if TYPE_CHECKING:
    from ozwald.records import NudgeAccepted

TARGETS = {"wake": "available", "sleep": "idle"}  # what --wait waits for (ozwald.records.NUDGE_TARGETS)


def seconds(text: str) -> float:
    """An argparse type: seconds to wait, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), got {text!r}")
    return value


def _run(args: argparse.Namespace, operation: str) -> int:
    client = client_of(args, timeout=10.0)
    call = client.wake if operation == "wake" else client.sleep
    answer: NudgeAccepted = call(args.instance, wait=args.wait)
    if args.json:
        print_json(answer)
    if args.wait is None:
        if not args.json:
            print(answer.message)
        return EXIT_OK
    instance = answer.instance
    status = instance.status if instance is not None else "not reconciled yet"
    reason = (instance.info.reason or "") if instance is not None else ""
    if not args.json:
        print(f"{args.instance}: {status}" + (f": {reason}" if reason else ""))
    if not answer.settled:
        print(f"error: timed out after {args.wait:g} s waiting for {args.instance} to be {TARGETS[operation]} "
              f"(it is {status})", file=sys.stderr)
        return EXIT_TIMEOUT
    if status == "failed":
        print(f"error: {args.instance} failed: {reason or 'no reason given'}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_wake(args: argparse.Namespace) -> int:
    return _run(args, "wake")


def cmd_sleep(args: argparse.Namespace) -> int:
    return _run(args, "sleep")


def register(actions: Actions) -> None:
    for name, func, text, target in (
            ("wake", cmd_wake, "start an on-demand instance's container now (it idles out after idle_stop)",
             "available"),
            ("sleep", cmd_sleep, "stop an on-demand instance's container now; its socket keeps listening", "idle")):
        action = actions.add(name, func, text)
        action.add_argument("instance", help="the instance name (as in list_active_services); it must be desired "
                                             "and on demand")
        action.add_argument("--wait", "-w", type=seconds, metavar="SECONDS",
                            help=f"wait up to SECONDS until it is {target} (exit 0) or failed (exit 1); exit 4 "
                                 "when the time runs out")
        api_flags(action)
        json_flag(action, "print the API's answer as JSON")
