# SPDX-License-Identifier: AGPL-3.0-or-later
"""Where Ozwald's Quadlet files live, written atomically."""

from ozwald.quadlet.stored import StoredUnit
from ozwald.units.store import SyncResult, UnitStore

__all__ = ["StoredUnit", "SyncResult", "UnitStore"]
