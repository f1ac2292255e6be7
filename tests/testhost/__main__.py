# SPDX-License-Identifier: AGPL-3.0-or-later
"""Command line for developers: build the cached test-host tree, or boot a host to poke at.

Run from the repository root, as root::

    python -m tests.testhost build          # build (or find) the cached tree, print path and timing
    python -m tests.testhost boot           # boot a host, print how to reach it, stop on Ctrl-C
    python -m tests.testhost key            # print the recipe's cache key
    python -m tests.testhost prune          # delete old cached trees and leftovers of killed runs
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType

from tests.testhost.harness import (
    CACHE_ROOT,
    TestHost,
    TestHostError,
    build_rootfs,
    cached_rootfs,
    prune,
    recipe_key,
)


def cmd_build(args: argparse.Namespace) -> int:
    cached = cached_rootfs() is not None and not args.force
    started = time.monotonic()
    rootfs = build_rootfs(force=args.force)
    elapsed = time.monotonic() - started
    print(rootfs)
    print(f"{'cached' if cached else 'built'} in {elapsed:.1f} s (key {recipe_key()})")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    with TestHost(keep=args.keep, mode=args.mode) as host:
        print(host.describe())
        timings = ", ".join(f"{k} {v:.2f} s" for k, v in host.timings.items())
        print(f"timings:       {timings}")
        if host.failed_units:
            print(f"failed units:  {', '.join(host.failed_units)}")
        print("Ctrl-C stops it.", flush=True)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop and not args.once and host.running:
            time.sleep(0.2)
        if not host.running:
            print("the guest stopped by itself", file=sys.stderr)
    print(f"stopped ({host.timings.get('stop_s', 0.0):.2f} s)")
    return 0


def cmd_key(_args: argparse.Namespace) -> int:
    print(recipe_key())
    return 0


def cmd_prune(_args: argparse.Namespace) -> int:
    for path in prune():
        print(f"removed {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testhost", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help=f"build or find the cached tree under {CACHE_ROOT}")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=cmd_build)
    boot = sub.add_parser("boot", help="boot a test host and wait for Ctrl-C")
    boot.add_argument("--keep", action="store_true", help="keep its work directory afterwards")
    boot.add_argument("--once", action="store_true", help="stop again right away (a smoke test)")
    boot.add_argument("--mode", choices=["overlay", "copy"], help="writable layer (default: overlay)")
    boot.set_defaults(func=cmd_boot)
    sub.add_parser("key", help="print the cache key of the current recipe").set_defaults(func=cmd_key)
    sub.add_parser("prune", help="delete old trees and leftovers").set_defaults(func=cmd_prune)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if os.geteuid() != 0:
        print("the test host needs root (systemd-nspawn, veth, cgroups)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except TestHostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
