# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the reconciler's one thread is told: the only way other threads reach its state.

The D-Bus receiver puts systemd's typed events (`UnitChanged`, `JobRemoved`), an accepted update
puts `DesiredChanged`, a reload of the settings file puts `SettingsChanged`; the thread
itself produces `Tick` when nothing else arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from ozwald.config import Settings
from ozwald.systemd.protocol import JobRemoved, UnitChanged


@dataclass(frozen=True)
class DesiredChanged:
    """A new desired set was stored (its generation), or None: reconcile whatever is stored now."""

    generation: int | None = None


@dataclass(frozen=True)
class SettingsChanged:
    settings: Settings


@dataclass(frozen=True)
class Nudge:
    """Wake an on-demand instance (start its proxy, and so its container) or put it to sleep (stop its
    container; the socket keeps listening)."""

    name: str
    operation: str  # wake, sleep


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Shutdown:
    pass


Event = DesiredChanged | SettingsChanged | Nudge | Tick | Shutdown | UnitChanged | JobRemoved
