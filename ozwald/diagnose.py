# SPDX-License-Identifier: AGPL-3.0-or-later
"""Turn what systemd, Podman and the journal say into one reason an operator can act on.

systemd is the source of truth for *whether* an instance failed; this module only explains *why*,
in words such as "image localhost/x:latest not found" or "exited 3 after 2.1 s: <last log lines>".
"""

from __future__ import annotations

from collections.abc import Sequence

from ozwald.podman import PodmanInspector, PodmanUnavailable
from ozwald.systemd.protocol import UnitState, describe_exit

LOG_LINES_IN_REASON = 3
_MISSING_IMAGE_MARKERS = ("image not known", "manifest unknown", "no such image", "repository does not exist",
                          "short-name resolution", "initializing source")
def _log_suffix(logs: Sequence[str]) -> str:
    tail = [line.strip() for line in logs if line.strip()][-LOG_LINES_IN_REASON:]
    return (": " + " | ".join(tail)) if tail else ""


def _unresolvable_cdi(logs: Sequence[str]) -> str | None:
    for line in reversed(logs):
        if "unresolvable CDI devices" in line:
            return line.rsplit("unresolvable CDI devices", 1)[1].strip(" :") or "?"
    return None


def image_missing(image: str | None, logs: Sequence[str], podman: PodmanInspector | None) -> bool:
    if image is None:
        return False
    if podman is not None:
        try:
            return not podman.image_exists(image)
        except PodmanUnavailable:
            pass
    text = "\n".join(logs).lower()
    return any(marker in text for marker in _MISSING_IMAGE_MARKERS)


def explain_failure(state: UnitState, *, image: str | None = None, has_health_check: bool = False,
                    logs: Sequence[str] = (), podman: PodmanInspector | None = None) -> str:
    """One line saying why a unit failed (or is not running), most specific cause first."""
    if state.load_state not in ("loaded", ""):
        return (f"unit {state.name} is {state.load_state}: Quadlet did not generate it; check the "
                f"file with `/usr/libexec/podman/quadlet -dryrun`")
    if image_missing(image, logs, podman):
        return f"image {image} not found"
    cdi = _unresolvable_cdi(logs)
    if cdi is not None:
        return (f"CDI device {cdi} not found: no CDI spec in /etc/cdi or /var/run/cdi provides it "
                "(for NVIDIA: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)")
    result = state.result
    if result == "timeout":
        limit = state.timeout_start_usec / 1e6 if state.timeout_start_usec else None
        within = f" within the start timeout ({limit:g} s)" if limit else " within the start timeout"
        if has_health_check:
            return f"never became healthy{within}: health check failing" + _log_suffix(logs)
        return f"did not start{within}" + _log_suffix(logs)
    if result == "start-limit-hit" or (state.active_state == "failed" and state.n_restarts > 0):
        return (f"crash loop: systemd gave up (start limit hit) after {state.n_restarts} automatic restart"
                f"{'' if state.n_restarts == 1 else 's'}; last run {describe_exit(state)}" + _log_suffix(logs))
    if result == "oom-kill":
        return "killed by the out-of-memory killer" + _log_suffix(logs)
    if result in ("exit-code", "signal", "core-dump"):
        return describe_exit(state) + _log_suffix(logs)
    if result == "watchdog":
        return "watchdog timeout" + _log_suffix(logs)
    if result == "resources":
        return "systemd could not set up the unit's resources" + _log_suffix(logs)
    if state.active_state == "failed":
        return f"failed ({result or 'unknown result'})" + _log_suffix(logs)
    return f"{state.active_state} ({state.sub_state})" + _log_suffix(logs)
