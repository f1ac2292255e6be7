# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald` with timing probes: a diagnostic entry point for the benchmarks (`--trace`), never for production.

Run in the guest as ozwald.service's ExecStart (through a drop-in) in place of /usr/bin/ozwald:

    /opt/ozwald/venv/bin/python /usr/local/lib/ozbench/ozwald_trace.py serve

It wraps the methods on the update → available path and writes one line per call to stderr (the
journal): `OZTRACE <thread> <what> <start> <end>`, in seconds of CLOCK_MONOTONIC, which the guest shares
with the machine that runs the benchmark. Only the standard library and ozwald are imported.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time
from typing import Any

PROBES: list[tuple[str, str | None, list[str]]] = [
    ("ozwald.provisioner.core", "Provisioner", ["update", "_publish", "active_services"]),
    ("ozwald.state.desired", "DesiredStateStore", ["replace", "read"]),
    ("ozwald.provisioner.reconciler", "Reconciler",
     ["wake", "_pass", "_read_dirty", "_remove_stopped", "states", "targets", "_container_ids_of", "_enqueue",
      "_publish", "compose"]),
    ("ozwald.systemd.client", "SystemdClient", ["reload", "enqueue", "list_units", "unit_state", "reset_failed",
                                                "stop"]),
    ("ozwald.units.store", "UnitStore", ["write", "remove", "existing"]),
    ("ozwald.podman.inspector", "PodmanInspector", ["container"]),
    ("ozwald.systemd.protocol", None, ["event_from_signal"]),
]
# $OZTRACE_ONLY: "module:Class.method,…" (or "module:function") replaces PROBES (bench_scale traces only a
# pass, the D-Bus calls and the publishing). With it, some probes add a sixth field: the number of messages
# of a pipelined D-Bus batch, the status revision after a publish.
_ONLY = os.environ.get("OZTRACE_ONLY", "")
EXTRA: dict[str, Any] = {
    "SystemdClient._call_each": lambda args, result: len(args[1]),
    "Provisioner._publish": lambda args, result: args[0]._revision,
}
_out = sys.stderr
_lock = threading.Lock()


def _wrap(what: str, func: Any) -> Any:
    extra = EXTRA.get(what) if _ONLY else None

    @functools.wraps(func)
    def probe(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        result = None
        try:
            result = func(*args, **kwargs)
            return result
        finally:
            end = time.monotonic()
            tail = f" {extra(args, result)}" if extra is not None else ""
            line = f"OZTRACE {threading.current_thread().name} {what} {start:.6f} {end:.6f}{tail}\n"
            with _lock:
                _out.write(line)
                _out.flush()

    return probe


def _probes() -> list[tuple[str, str | None, list[str]]]:
    if not _ONLY:
        return PROBES
    out: list[tuple[str, str | None, list[str]]] = []
    for item in _ONLY.split(","):
        module_name, _, name = item.strip().partition(":")
        owner, _, method = name.rpartition(".")
        out.append((module_name, owner or None, [method]))
    return out


def install() -> None:
    for module_name, class_name, names in _probes():
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        for name in names:
            what = f"{class_name}.{name}" if class_name else name
            setattr(owner, name, _wrap(what, getattr(owner, name)))


if __name__ == "__main__":
    install()
    from ozwald.cli import main

    sys.argv[0] = "ozwald"
    sys.exit(main(sys.argv[1:]))
