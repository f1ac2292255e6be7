# SPDX-License-Identifier: AGPL-3.0-or-later
"""The Redis key layout, in one place.

Every key carries the provisioner name so that several provisioners can share one Redis (one per
GPU host, one cache) without seeing each other's state, and so that `redis-cli --scan
--pattern 'ozwald:NAME:*'` shows everything one provisioner owns.
"""

from __future__ import annotations

from dataclasses import dataclass

from ozwald.config.values import check_name

DEFAULT_PREFIX = "ozwald"


@dataclass(frozen=True)
class Keyspace:
    provisioner: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        # The name also becomes a file name (desired-NAME.json): the settings charset keeps it safe.
        check_name(self.provisioner)
        if not self.prefix or any(c in self.prefix for c in ": \t\r\n"):
            raise ValueError(f"invalid key prefix {self.prefix!r}")

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, self.provisioner, *parts))

    @property
    def desired(self) -> str:
        return self.key("desired")

    @property
    def status(self) -> str:
        return self.key("status")

    @property
    def profile_queue(self) -> str:
        return self.key("profile-queue")

    @property
    def profile_results(self) -> str:
        return self.key("profile-results")
