"""Where Ozwald's Quadlet files live, written atomically."""

from ozwald.units.store import StoredUnit, SyncResult, UnitStore

__all__ = ["StoredUnit", "SyncResult", "UnitStore"]
