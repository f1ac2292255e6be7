# SPDX-License-Identifier: AGPL-3.0-or-later
"""An instance's status, read from systemd: never `available` unless systemd says the unit is active.

With Notify=healthy, systemd only calls a unit with a health check active once Podman reports it healthy,
so `active` means ready. A failed start, a crash loop and a timeout all end in systemd's `failed` state
and are reported as `failed`, with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ozwald.provisioner.models import Status
from ozwald.systemd.protocol import UnitState


def status_of(state: UnitState | None, desired: bool, pending: bool) -> Status:
    """`pending`: Ozwald has queued a start or restart that systemd has not begun yet."""
    if not desired:
        return "stopping"
    if state is None or state.load_state != "loaded":
        return "starting"
    active = state.active_state
    if active == "active":
        return "starting" if pending else "available"
    if active in ("activating", "reloading"):
        return "starting"
    if active == "deactivating":
        # A restart passes through deactivating; a stop of a desired unit does not happen here.
        return "starting" if pending or state.sub_state in ("stop-sigterm", "stop-post", "auto-restart") else "stopping"
    if active == "failed":
        return "failed"
    # inactive: not started yet, or ended on its own
    return "starting" if pending else "failed"


def since(state: UnitState | None) -> str | None:
    if state is None or not state.state_change_usec:
        return None
    return datetime.fromtimestamp(state.state_change_usec / 1e6, tz=UTC).isoformat()
