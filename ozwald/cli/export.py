# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald export kubernetes`: the instances of a desired set as Kubernetes YAML on stdout.

    ozwald export kubernetes NAME[:VARIETY[:PROFILE]]… | --file F  [--namespace N] [--inline-secrets]
                             [--gpus device-plugin|dra|cdi] [--results FILE|api]

What does not map, and the `kubectl create secret` commands for the instances' secrets, go to stderr.
The decisions are `ozwald.export.kubernetes` (pure); this module reads the settings and the profiling
results and prints. `add_parser` registers the action, `run` carries it out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ozwald.cli.common import api_flags, config_flag

if TYPE_CHECKING:
    from ozwald.cli.common import Actions

EXIT_OK = 0
# The export's GPU modes, spelt here because the parser is built from the standard library alone (the man page
# is generated with the system's python3); tests/export checks both lists agree.
GPU_MODES = ("device-plugin", "dra", "cdi")


def register(actions: Actions) -> None:
    """Add `export` to `ozwald`'s subcommands."""
    text = "print Kubernetes objects (YAML) for instances: Deployment, Service, PVCs; notes on stderr"
    sub = actions.add("export", run, text)
    config_flag(sub)
    sub.add_argument("target", choices=["kubernetes"], help="what to export for (kubernetes)")
    sub.add_argument("items", nargs="*", metavar="NAME[:VARIETY[:PROFILE]]",
                     help="instances (the service is NAME; a variety left out is the service's first)")
    sub.add_argument("--file", "-f", metavar="FILE",
                     help="the desired set as a YAML/JSON list of {name, service, variety, profile} ('-': stdin)")
    sub.add_argument("--namespace", "-n", metavar="NS", help="namespace of every object (default: none written)")
    sub.add_argument("--inline-secrets", action="store_true",
                     help="write Secret objects holding the secret values into the YAML (default: reference a "
                          "Secret you create with the kubectl command printed on stderr)")
    sub.add_argument("--gpus", choices=GPU_MODES, default="device-plugin",
                     help="device-plugin: nvidia.com/gpu / amd.com/gpu limits (default); dra: a "
                          "ResourceClaimTemplate per instance; cdi: the CDI names as limits (podman kube play)")
    sub.add_argument("--results", metavar="FILE|api",
                     help="profiling results for memory requests where none is declared: a JSON file (`ozwald "
                          "profile --results --json`, or the provisioner's profile-results-*.json), or `api` to "
                          "ask the running provisioner")
    sub.add_argument("--provisioner", metavar="NAME", help="whose profiling.margin to add to measured footprints")
    api_flags(sub)


def run(args: argparse.Namespace) -> int:
    from ozwald.cli.common import UsageError, settings_of
    from ozwald.cli.services import read_items
    from ozwald.config.model import ProfilingSettings
    from ozwald.export.kubernetes import ExportOptions, export
    from ozwald.records import ServiceRequest, UpdateError

    if not args.items and not args.file:
        raise UsageError("name at least one instance (NAME[:VARIETY[:PROFILE]]) or --file")
    _, settings = settings_of(args)
    items = [ServiceRequest.model_validate(item) for item in read_items(args)]
    margins = {p.name: p.profiling.margin for p in settings.provisioners}
    if args.provisioner is not None and args.provisioner not in margins:
        raise UsageError(f"--provisioner {args.provisioner!r}: not in the settings ({', '.join(margins) or 'none'})")
    margin = margins[args.provisioner] if args.provisioner else (
        next(iter(set(margins.values()))) if len(set(margins.values())) == 1 else ProfilingSettings().margin)
    options = ExportOptions(namespace=args.namespace, inline_secrets=args.inline_secrets, gpus=args.gpus,
                            margin=margin)
    try:
        exported = export(settings, items, options, _results(args))
    except UpdateError as exc:
        raise UsageError(str(exc)) from exc
    sys.stdout.write(exported.yaml())
    sys.stdout.flush()
    for line in exported.messages():
        print(line, file=sys.stderr)
    return EXIT_OK


def _results(args: argparse.Namespace) -> list[Any]:
    """Profiling results from a file or the API, as ProfileResult records."""
    from ozwald.cli.common import UsageError
    from ozwald.state.profile_results import ProfileResult

    if not args.results:
        return []
    if args.results == "api":
        from ozwald.cli.common import client_of

        raw: Any = client_of(args).profile_results()
    else:
        try:
            text = sys.stdin.read() if args.results == "-" else Path(args.results).read_text()
            raw = json.loads(text)
        except OSError as exc:
            raise UsageError(f"{args.results}: {exc.strerror}") from exc
        except ValueError as exc:
            raise UsageError(f"{args.results}: not JSON: {exc}") from exc
    if isinstance(raw, dict):
        raw = raw.get("results", [])
    if not isinstance(raw, list):
        raise UsageError(f"{args.results}: expected a list of profiling results")
    try:
        return [ProfileResult.model_validate(r) for r in raw]
    except ValueError as exc:
        raise UsageError(f"{args.results}: not profiling results: {exc}") from exc
