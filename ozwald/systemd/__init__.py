# SPDX-License-Identifier: AGPL-3.0-or-later
"""systemd over D-Bus: a no-I/O protocol core (`protocol`) and a thread-safe blocking client."""

from ozwald.systemd.client import JobOutcome, SystemdClient, system_bus_address
from ozwald.systemd.errors import AccessDenied, BusUnavailable, JobFailed, SystemdError, UnitNotFound
from ozwald.systemd.protocol import UnitState

__all__ = [
    "AccessDenied",
    "BusUnavailable",
    "JobFailed",
    "JobOutcome",
    "SystemdClient",
    "SystemdError",
    "UnitNotFound",
    "UnitState",
    "system_bus_address",
]
