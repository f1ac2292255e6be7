"""Moved to `ozwald.records`; kept so existing imports (the reconciler's) keep working."""

from ozwald.records import (
    ActiveService,
    DesiredInstance,
    DesiredSet,
    PlanAction,
    PlanEntry,
    ServiceRequest,
    Status,
    UpdateError,
)

__all__ = ["ActiveService", "DesiredInstance", "DesiredSet", "PlanAction", "PlanEntry", "ServiceRequest", "Status",
           "UpdateError"]
