"""The `ozwald` command line.

Errors an operator can fix (bad settings, unknown names) are printed as one line each, without a
traceback, and exit with status 2; a traceback means a bug in Ozwald.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
