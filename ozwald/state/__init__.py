# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's state: the desired set, the profiling queue and results, the status cache.

The provisioner owns the first three: files in its state directory are the truth, Redis holds copies
for whoever wants one (`durable.py`). The status cache is Redis only: systemd is the truth it caches.
"""

from ozwald.state.desired import DesiredStateStore
from ozwald.state.errors import IdentityError, QueueFull, StateCorrupt, StateError, StateUnavailable
from ozwald.state.identity import ENV_VAR, Identity, Machine, select_provisioner
from ozwald.state.keys import Keyspace
from ozwald.state.profile_results import ProfileResult, ProfileResults, result_json
from ozwald.state.profiles import ProfileQueue, ProfileRequest, ProfileRequestBody, validate_profile_request
from ozwald.state.redis_conn import connect, describe, endpoint_of, redis_errors
from ozwald.state.status import StatusCache

__all__ = [
    "ENV_VAR",
    "DesiredStateStore",
    "Identity",
    "IdentityError",
    "Keyspace",
    "Machine",
    "ProfileQueue",
    "ProfileRequest",
    "ProfileRequestBody",
    "ProfileResult",
    "ProfileResults",
    "QueueFull",
    "StateCorrupt",
    "StateError",
    "StateUnavailable",
    "StatusCache",
    "connect",
    "describe",
    "endpoint_of",
    "redis_errors",
    "result_json",
    "select_provisioner",
    "validate_profile_request",
]
