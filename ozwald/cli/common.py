# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the action groups of `ozwald` share: exit statuses, the flags more than one action takes, and the
ways to reach the settings, the API and systemd.

Each flag helper adds one flag (or one pair) to one action's parser, so an action takes exactly the flags
it uses and argparse refuses the others, naming them. Standard library only at import time: the man page
and the completion are generated from the parser at package build time.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ozwald.errors import Exit, OzwaldError

if TYPE_CHECKING:
    from ozwald.client import OzwaldClient
    from ozwald.config import Settings
    from ozwald.systemd import SystemdClient

EXIT_OK = Exit.OK
EXIT_FAILED = Exit.FAILED
EXIT_USAGE = Exit.USAGE
EXIT_UNREACHABLE = Exit.UNREACHABLE
EXIT_TIMEOUT = Exit.TIMEOUT
EXIT_BUG = Exit.BUG

EXIT_CODES_TEXT = """\
exit status:
  0  success
  1  the operation ran but the outcome is bad (an instance failed, the provisioner is unhealthy,
     a doctor check failed)
  2  operator error: settings that do not validate (file:line), an unknown name, a bad argument,
     a request the API refused
  3  something needed cannot be reached: the API, systemd (D-Bus), Redis
  4  timed out waiting (update_services --wait, profile --wait, wake|sleep --wait)
  70  a bug in Ozwald: an error it did not expect; `ozwald --debug ACTION ...` shows the traceback"""

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

Command = Callable[[argparse.Namespace], int]


class UsageError(OzwaldError):
    """An operator error: printed without a traceback, exit status 2."""

    exit_status = Exit.USAGE
    http_status = 400


class Unreachable(OzwaldError):
    """Something the command needs cannot be reached: exit status 3."""

    exit_status = Exit.UNREACHABLE
    http_status = 503


def failure(exc: BaseException) -> tuple[Exit, list[str]]:
    """The one mapping of errors to `ozwald`'s exit status and `error: ` lines: what each error declares
    (`ozwald.errors`). Anything else is a bug in Ozwald, never an operator error: 70."""
    if isinstance(exc, OzwaldError):
        return exc.exit_status, exc.cli_lines()
    return Exit.BUG, [f"a bug in Ozwald: {type(exc).__name__}: {exc}",
                      "the traceback is in the debug log: run again as `ozwald --debug ACTION ...`"]


class Actions:
    """The `ozwald` subcommands: each group module's `register(actions)` adds its actions with `add`."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers

    def add(self, name: str, func: Command, text: str) -> argparse.ArgumentParser:
        """A new action with only `--help`; the caller adds the flags it uses."""
        sub: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=text, description=text, epilog=EXIT_CODES_TEXT,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub


# -- flags more than one action takes -----------------------------------------------------------------


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (argparse names the flag when it refuses one)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="settings file (default: $OZWALD_CONFIG, ./ozwald.yml, /etc/ozwald/ozwald.yml)")


def json_flag(parser: argparse.ArgumentParser, text: str = "print JSON for scripts instead of a table") -> None:
    parser.add_argument("--json", action="store_true", help=text + "; only JSON goes to stdout")


def provisioner_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provisioner", metavar="NAME",
                        help="which provisioners[] entry this is (default: $OZWALD_PROVISIONER, else the one "
                             "whose host is this machine, else the only one)")


def api_flags(parser: argparse.ArgumentParser) -> None:
    """The API's port, for actions that talk to the API (`--api-port` is the same option, as the contract has it)."""
    parser.add_argument("--port", "--api-port", dest="port", type=port, metavar="N",
                        help="the API's port (default: $OZWALD_API_PORT, the start_provisioner drop-in, 8000)")


def items_flags(parser: argparse.ArgumentParser, items_help: str) -> None:
    parser.add_argument("items", nargs="*", metavar="NAME[:VARIETY[:PROFILE]]", help=items_help)
    parser.add_argument("--file", "-f", metavar="FILE",
                        help="the desired set as a YAML/JSON list of {name, service, variety, profile} ('-': stdin)")


# -- the settings ------------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> tuple[str, Settings]:
    from ozwald.config import find_config_path, load_settings

    path = find_config_path(args.config)
    return str(path), load_settings(path)


# -- the API -------------------------------------------------------------------------------------------


def load_env_file(path: Path | None = None) -> None:
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


def drop_in_path(unit: str, unit_dir: Path | None = None) -> Path:
    return (unit_dir or UNIT_DIR) / f"{unit}.d" / DROP_IN_NAME


def drop_in_port(unit: str, variable: str, unit_dir: Path | None = None) -> int | None:
    """The port an earlier start_provisioner wrote, if any."""
    try:
        text = drop_in_path(unit, unit_dir).read_text()
    except OSError:
        return None
    match = re.search(rf"^Environment={variable}=(\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def api_port(args: argparse.Namespace) -> int:
    """--port, else $OZWALD_API_PORT, else the start_provisioner drop-in, else 8000."""
    port = getattr(args, "port", None)
    if port:
        return int(port)
    from_env = os.environ.get("OZWALD_API_PORT")
    if from_env and from_env.isdigit():
        return int(from_env)
    return drop_in_port(PROVISIONER_UNIT, "OZWALD_API_PORT") or DEFAULT_API_PORT


def client_of(args: argparse.Namespace, timeout: float = 10.0) -> OzwaldClient:
    from ozwald.api.auth import key_from_env
    from ozwald.client import OzwaldClient

    load_env_file()
    base = os.environ.get("OZWALD_BASE") or f"http://127.0.0.1:{api_port(args)}"
    key = key_from_env()
    try:
        return OzwaldClient(base, key, timeout=timeout)
    except ValueError as exc:  # OZWALD_BASE is not an http(s) URL
        raise UsageError(f"OZWALD_BASE: {exc}") from None


# -- systemd -------------------------------------------------------------------------------------------


def systemd() -> SystemdClient:
    from ozwald.systemd import BusUnavailable, SystemdClient

    try:
        return SystemdClient()
    except BusUnavailable as exc:
        raise Unreachable(f"systemd: {exc}") from exc


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
