# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's shared state: the desired set, the status cache, the profiling queue and results, in Redis.

Redis is shared by the API and the reconciler and wakes the reconciler on change; the desired set is
also kept in a local file, its durable copy, because the provisioner's Redis runs without persistence.
"""

from ozwald.state.desired import ChangeListener, DesiredListener, DesiredStateStore
from ozwald.state.errors import IdentityError, QueueFull, StateCorrupt, StateError, StateUnavailable
from ozwald.state.identity import ENV_VAR, Identity, Machine, select_provisioner
from ozwald.state.keys import Keyspace
from ozwald.state.profile_results import ProfileResult, ProfileResults, result_json
from ozwald.state.profiles import ProfileQueue, ProfileRequest, ProfileRequestBody, validate_profile_request
from ozwald.state.redis_conn import connect, describe, endpoint_of, redis_errors
from ozwald.state.status import StatusCache

__all__ = [
    "ENV_VAR",
    "ChangeListener",
    "DesiredListener",
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
