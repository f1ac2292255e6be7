# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald fleet`: every provisioner of the settings file in one table (or `--json`).

    ozwald fleet [--timeout S] [--json]
    ozwald fleet --place SERVICE[:VARIETY[:PROFILE]]      where it would fit (advice; applies nothing)

The provisioners are asked in parallel, each within `--timeout`; one that does not answer is a row
`unreachable` with the reason, and the exit status is 3 only when none answered. The work is
`ozwald.fleet.Fleet`; `add_parser` registers the action, `run` carries it out.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ozwald.cli.common import config_flag

if TYPE_CHECKING:
    from ozwald.cli.common import Actions

EXIT_OK = 0
EXIT_UNREACHABLE = 3


def register(actions: Actions) -> None:
    """Add `fleet` to `ozwald`'s subcommands."""
    text = "status of every provisioner in the settings file, in one table (asked in parallel)"
    sub = actions.add("fleet", run, text)
    config_flag(sub)
    sub.add_argument("--timeout", type=float, default=5.0, metavar="S",
                     help="how long each provisioner may take to answer (default 5)")
    sub.add_argument("--place", metavar="SERVICE[:VARIETY[:PROFILE]]",
                     help="instead: where an instance would fit, best first, with the reasons of the others")
    sub.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def gib(mib: int) -> str:
    return f"{mib / 1024:.1f}"


def rows(statuses: list[Any]) -> list[tuple[str, ...]]:
    """One row per instance; a provisioner without instances, or unreachable, is one row of its own."""
    out: list[tuple[str, ...]] = []
    for member in statuses:
        memory = member.gpu_memory_mib
        gpu = f"{gib(memory[0])}/{gib(memory[1])} GiB" if memory else ("?" if member.gpu_error else "-")
        if not member.reachable:
            out.append((member.host, member.provisioner, "-", f"unreachable: {member.error}", "-", "-", "-"))
            continue
        if not member.services:
            out.append((member.host, member.provisioner, "-", "(no instances)", "-", "-", gpu))
        for service in member.services:
            out.append((member.host, member.provisioner, service.name, service.status, service.variety or "-",
                        service.profile or "-", gpu))
    return out


def run(args: argparse.Namespace) -> int:
    from ozwald.api.auth import key_from_env
    from ozwald.cli.common import load_env_file, parse_item, settings_of
    from ozwald.cli.output import print_json, print_table
    from ozwald.fleet import Fleet

    _, settings = settings_of(args)
    load_env_file()
    fleet = Fleet.from_settings(settings, key_from_env(), timeout=args.timeout)
    if args.place:
        item = parse_item(args.place)
        candidates = fleet.place(item["name"], item.get("variety"), item.get("profile"))
        if args.json:
            print_json([{"provisioner": c.provisioner, "host": c.host, "fits": c.fits, "reasons": list(c.reasons),
                         "headroom_vram_mib": c.headroom_vram_mib, "headroom_ram_gb": c.headroom_ram_gb,
                         "instance": c.instance, "fit": c.entry.fit if c.entry else None} for c in candidates])
        else:
            print_table(("HOST", "PROVISIONER", "FITS", "VRAM LEFT MiB", "RAM FREE GB", "WHY NOT"),
                        [(c.host, c.provisioner, "yes" if c.fits else "no",
                          "-" if c.headroom_vram_mib is None else c.headroom_vram_mib,
                          "-" if c.headroom_ram_gb is None else c.headroom_ram_gb, "; ".join(c.reasons))
                         for c in candidates], "(no provisioners in the settings)")
        return EXIT_OK if any(c.fits for c in candidates) else 1
    statuses = fleet.status()
    if args.json:
        print_json([s.as_json() for s in statuses])
    else:
        print_table(("HOST", "PROVISIONER", "INSTANCE", "STATUS", "VARIETY", "PROFILE", "GPU MEM USED/TOTAL"),
                    rows(statuses), "(no provisioners in the settings)")
    if statuses and not any(s.reachable for s in statuses):
        print("error: no provisioner answered", file=sys.stderr)
        return EXIT_UNREACHABLE
    return EXIT_OK
