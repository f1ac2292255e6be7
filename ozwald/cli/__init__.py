# SPDX-License-Identifier: AGPL-3.0-or-later
"""The `ozwald` command line: one module per group of actions, each action with only its own flags.

Exit codes (also in `ozwald --help` and the man page):
  0  success
  1  the operation ran but the outcome is bad: an instance failed, the provisioner is unhealthy, a
     doctor check failed
  2  an operator error: bad settings (each problem as file:line), an unknown name, a bad argument, a
     request the API refused (4xx)
  3  something needed cannot be reached: the API, systemd's D-Bus, Redis
  4  timed out waiting (`update_services --wait --timeout`)
Errors are one line each, without a traceback; a traceback means a bug in Ozwald.

A new action is one module with a `register(actions: Actions)` function that adds it (with
`actions.add(name, func, help)`) and its flags (the helpers of `ozwald.cli.common` add the shared ones),
plus one line in GROUPS below. The parser is built from the standard library alone, so that the man page
and the bash completion can be generated from it at package build time (`python3 -m ozwald.cli.docs`):
an action imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ozwald import __version__
from ozwald.cli import config, health, profile, provisioner, services
from ozwald.cli.common import (
    ENVIRONMENT_TEXT,
    EXIT_CODES_TEXT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Actions,
    Unreachable,
    UsageError,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "main"]

# The groups of actions, in the order `ozwald --help` lists them: each module's `register` adds its actions.
GROUPS = (
    config,
    provisioner,
    health,
    services,
    profile,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ozwald", description="Podman/systemd-native provisioner for AI services.",
        epilog=EXIT_CODES_TEXT + "\n\n" + ENVIRONMENT_TEXT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ozwald {__version__}")
    actions = Actions(parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    for group in GROUPS:
        group.register(actions)
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
