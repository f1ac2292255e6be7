"""The last lines a unit logged, from the journal.

Quadlet containers run with `--rm`, so once one fails Podman has nothing left to show: the journal,
which receives both podman's own errors and the container's output (conmon logs under the unit), is
where the reason survives. Reading it is off the hot path, so `journalctl` is used as is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def unit_log_tail(unit: str, lines: int = 20, invocation_id: str | None = None,
                  command_prefix: Sequence[str] = (), timeout: float = 10.0) -> list[str]:
    """Up to `lines` recent messages of `unit`'s processes, oldest first; [] if the journal is unreadable.

    `invocation_id` narrows them to one run of the unit. `command_prefix` runs journalctl elsewhere
    (for example inside a test host's namespaces).
    """
    argv = [*command_prefix, "journalctl", "--no-pager", "--quiet", "-o", "cat", "-n", str(lines),
            f"_SYSTEMD_UNIT={unit}"]
    if invocation_id:
        argv.append(f"_SYSTEMD_INVOCATION_ID={invocation_id}")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line for line in out.stdout.splitlines() if line.strip()][-lines:]
