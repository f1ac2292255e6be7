# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner core's tests run against a real Redis: see tests/support/redis_server.py."""

from tests.support.redis_server import redis_client, redis_server

__all__ = ["redis_client", "redis_server"]
