# SPDX-License-Identifier: AGPL-3.0-or-later
"""The `ozwald` command line: one module per group of actions, each action with only its own flags.

Exit codes (also in `ozwald --help` and the man page):
  0  success
  1  the operation ran but the outcome is bad: an instance failed, the provisioner is unhealthy, a
     doctor check failed
  2  an operator error: bad settings (each problem as file:line), an unknown name, a bad argument, a
     request the API refused (4xx)
  3  something needed cannot be reached: the API, systemd's D-Bus, Redis
  4  timed out waiting (`update_services --wait --timeout`, `profile --wait --timeout`, `wake --wait S`)
  70 a bug in Ozwald: an error it did not expect (the traceback goes to the debug log, `ozwald --debug`)
Errors are one line each, without a traceback. Each error class declares its exit status where it is
defined (`ozwald.errors`); `common.failure` is the one place that reads it.

A new action is one module with a `register(actions: Actions)` function that adds it (with
`actions.add(name, func, help)`) and its flags (the helpers of `ozwald.cli.common` add the shared ones),
plus one line in GROUPS below. The parser is built from the standard library alone, so that the man page
and the bash completion can be generated from it at package build time (`python3 -m ozwald.cli.docs`):
an action imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ozwald import __version__
from ozwald.cli import config, export, fleet, health, on_demand, profile, provisioner, services
from ozwald.cli.common import (
    ENVIRONMENT_TEXT,
    EXIT_BUG,
    EXIT_CODES_TEXT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Actions,
    failure,
)

log = logging.getLogger("ozwald.cli")

__all__ = ["EXIT_BUG", "EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser",
           "main"]

# The groups of actions, in the order `ozwald --help` lists them: each module's `register` adds its actions.
GROUPS = (
    config,
    provisioner,
    health,
    services,
    on_demand,
    profile,
    export,
    fleet,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ozwald", description="Podman/systemd-native provisioner for AI services.",
        epilog=EXIT_CODES_TEXT + "\n\n" + ENVIRONMENT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ozwald {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="log what happens to stderr, with the traceback of an unexpected error")
    actions = Actions(parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    for group in GROUPS:
        group.register(actions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, lines = failure(exc)
        if code == EXIT_BUG:
            log.debug("the traceback of this bug", exc_info=exc)
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return int(code)
