# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald list_active_services --watch`: the table of instances redrawn whenever a status changes, with each
GPU's memory, until interrupted (Ctrl-C ends it with status 0).

It waits on the API's blocking queries (`GET /srv/services/active/?after=<revision>&wait=S`), so a change is
drawn as soon as the provisioner publishes it and an idle provisioner is asked once per `wait` seconds (which
also refreshes the GPU memory). In a terminal each frame replaces the last; otherwise, and with `--json`
(one JSON document per line: revision, statuses, GPUs), frames follow each other. Kept apart from
`ozwald/cli.py`, which calls `register` and `watch`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ozwald.cli.output import plain, table

WAIT_S = 10.0  # the longest a frame stays up without a change (GPU memory moves without one)
CLEAR = "\033[H\033[2J"
MIB = 1024 * 1024


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", "-w", action="store_true",
                        help="redraw whenever a status changes (with each GPU's memory), until Ctrl-C")


def rows(services: Sequence[Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for s in services:
        out.append((str(s.name), str(s.status), str(s.service), s.variety or "-", s.profile or "-",
                    str(s.info.get("since") or ""), str(s.info.get("reason") or "")))
    return out


def gpu_lines(host: dict[str, Any]) -> list[str]:
    """One line per GPU: id, name, used and total memory (MiB, as the API reports it)."""
    lines = []
    for gpu in host.get("gpus") or []:
        total, available = gpu.get("total_vram"), gpu.get("available_vram")
        if isinstance(total, int | float) and isinstance(available, int | float):
            memory = f"{total - available:.0f} of {total:.0f} MiB in use or reserved ({available:.0f} available)"
        else:
            memory = "memory unknown"
        lines.append(f"{gpu.get('id')}  {gpu.get('description') or ''}  {memory}".replace("    ", "  "))
    return lines


def frame(revision: int, services: Sequence[Any], host: dict[str, Any] | None, now: float) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    parts = [f"{len(services)} instance{'' if len(services) == 1 else 's'} at {stamp} (revision {revision}); "
             "Ctrl-C to stop", ""]
    parts.append(table(("INSTANCE", "STATUS", "SERVICE", "VARIETY", "PROFILE", "SINCE", "REASON"), rows(services))
                 if services else "(no active services)")
    gpus = gpu_lines(host) if host is not None else ["GPUs: the API did not say"]
    parts += ["", *(gpus or ["(no GPU)"])]
    return "\n".join(parts) + "\n"


def watch(client: Any, *, as_json: bool = False, out: TextIO | None = None, clear: bool | None = None,
          wait: float | None = None, frames: int | None = None) -> int:
    """Draw until interrupted (or `frames` frames, for tests); returns the exit status."""
    out = out or sys.stdout
    wait = WAIT_S if wait is None else wait
    clear = out.isatty() and not as_json if clear is None else clear
    revision: int | None = None
    shown = ""
    drawn = 0
    try:
        while frames is None or drawn < frames:
            revision, services = client.watch_active(revision, wait=wait)
            try:
                host: dict[str, Any] | None = dict(client.host_resources())
            except Exception:  # the statuses are what matters; a GPU reading that fails is said so
                host = None
            if as_json:
                text = json.dumps({"revision": revision, "services": plain(services),
                                   "gpus": (host or {}).get("gpus")}, sort_keys=True) + "\n"
                body = text
            else:
                text = frame(revision, services, host, time.time())
                body = text.split("\n", 1)[1]  # the same table at another time is no change
            if body == shown:
                continue
            shown = body
            out.write((CLEAR if clear else ("" if drawn == 0 or as_json else "\n")) + text)
            out.flush()
            drawn += 1
    except KeyboardInterrupt:
        if clear:
            out.write("\n")
    return 0
