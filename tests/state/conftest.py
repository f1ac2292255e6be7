# SPDX-License-Identifier: AGPL-3.0-or-later
"""The state tests run against a real Redis: see tests/support/redis_server.py."""

from tests.support.redis_server import (
    redis_client,
    redis_password_server,
    redis_server,
    reference_client,
    restart_redis,
    state_dir,
)

__all__ = ["redis_client", "redis_password_server", "redis_server", "reference_client", "restart_redis", "state_dir"]
