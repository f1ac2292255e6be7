# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald check_config` and `ozwald render`: the settings file, read here without the provisioner."""

from __future__ import annotations

import argparse
import sys

from ozwald.cli.common import EXIT_OK, Actions, UsageError, config_flag, json_flag, settings_of


def cmd_check_config(args: argparse.Namespace) -> int:
    path, settings = settings_of(args)
    if args.json:
        from ozwald.cli.output import print_json

        print_json({"path": path, "hosts": [h.name for h in settings.hosts],
                    "provisioners": [p.name for p in settings.provisioners],
                    "services": [{"name": s.name, "type": s.type, "varieties": list(s.varieties),
                                  "profiles": list(s.profiles)} for s in settings.services]})
        return EXIT_OK
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

    _, settings = settings_of(args)
    spec = resolve(settings, args.service, args.variety, args.profile)
    if spec.type != "container":
        raise UsageError(f"service {spec.service!r} is of type {spec.type!r}; only container services have units")
    try:
        version = parse_version(args.podman_version) if args.podman_version else NEWEST_KNOWN
    except ValueError as exc:
        raise UsageError(f"--podman-version: {exc}") from None
    unit = render_unit(spec, args.name or args.service, version)
    for warning in unit.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(unit.text)
    return EXIT_OK


def register(actions: Actions) -> None:
    check = actions.add("check_config", cmd_check_config, "validate the settings file (errors as file:line)")
    config_flag(check)
    check.add_argument("--quiet", "-q", action="store_true", help="print nothing when the file is valid")
    json_flag(check, "print the summary as JSON")
    render = actions.add("render", cmd_render, "print the Quadlet unit of a service")
    config_flag(render)
    render.add_argument("service", help="a service of the settings file")
    render.add_argument("--variety", help="one of the service's varieties")
    render.add_argument("--profile", help="one of the service's profiles")
    render.add_argument("--name", help="instance name (default: the service name)")
    render.add_argument("--podman-version", metavar="X.Y", help="render for this Podman version (default: newest)")
