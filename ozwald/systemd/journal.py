# SPDX-License-Identifier: AGPL-3.0-or-later
"""The last lines a unit logged, from the journal.

Quadlet containers run with `--rm`, so once one fails Podman has nothing left to show: the journal,
which receives both podman's own errors and the container's output (conmon logs under the unit), is
where the reason survives. Reading it is off the hot path, so `journalctl` is used as is.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def container_log_tail(container: str, lines: int = 20, command_prefix: Sequence[str] = (),
                       timeout: float = 10.0) -> list[str]:
    """Up to `lines` recent lines of a Quadlet container, oldest first; [] if the journal is unreadable.

    Two sources, and only these: the container's own output (CONTAINER_NAME, logged by conmon) and
    podman's errors while starting it (Quadlet tags them with the unit's name, which is the container's).
    Podman's event records and conmon's warnings are left out: they repeat what systemd already says.
    `command_prefix` runs journalctl elsewhere (for example inside a test host's namespaces).
    """
    argv = [*command_prefix, "journalctl", "--no-pager", "--quiet", "-o", "cat", "-n", str(lines),
            f"CONTAINER_NAME={container}", "+", f"SYSLOG_IDENTIFIER={container}"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    # `podman run -d` prints the new container's id: not a reason anyone can act on.
    return [line for line in out.stdout.splitlines() if line.strip() and not _CONTAINER_ID.fullmatch(line.strip())
            ][-lines:]
