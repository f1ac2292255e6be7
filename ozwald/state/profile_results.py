# SPDX-License-Identifier: AGPL-3.0-or-later
"""Profiling results: what a (service, variety, profile) measured, under the spec hash it ran.

A result is keyed by (service, variety, profile, spec hash): when the settings change, the spec hash of
the same (service, variety, profile) changes, and the old result is stale; it is kept (and shown as
stale) but never used for admission. Stored like the queue: `<state_dir>/profile-results-<provisioner>.json`,
copied to Redis.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ozwald.state.durable import DurableDocument, Revisioned
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.resp import Client

KEEP_PER_CONFIG = 5  # results kept per (service, variety, profile), newest first, across spec hashes


class ProfileResult(BaseModel):
    """One profiling run. Memory in MiB; times in seconds; VRAM per GPU id."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str
    variety: str | None = None
    profile: str | None = None
    spec_hash: str
    outcome: Literal["measured", "failed"]
    reason: str | None = None  # why a run failed
    request_id: str | None = None
    item_id: str | None = None
    started_at: datetime
    finished_at: datetime
    ready_s: float | None = None  # start of the container's main process to ready (systemd's timestamps)
    ready_by: str | None = None  # "health check" or "minimum uptime (5 s)"
    ram_peak_mib: float | None = None
    ram_steady_mib: float | None = None
    ram_method: str | None = None
    cpu_seconds_to_ready: float | None = None
    cpu_cores_steady: float | None = None
    cpu_cores_peak: float | None = None
    vram_peak_mib: dict[str, float] = Field(default_factory=dict)  # GPU id → peak MiB attributed to the run
    vram_method: str | None = None
    held_s: float | None = None
    samples: int = 0

    @property
    def config_key(self) -> tuple[str, str | None, str | None]:
        return (self.service, self.variety, self.profile)

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        return (self.service, self.variety, self.profile, self.spec_hash)


class ProfileResultsDocument(Revisioned):
    results: list[ProfileResult] = Field(default_factory=list)


class ProfileResults:
    """The results of one provisioner, newest first."""

    def __init__(self, redis: Client, provisioner: str, *, state_dir: Path | str,
                 prefix: str = DEFAULT_PREFIX) -> None:
        path = Path(state_dir) / f"profile-results-{provisioner}.json"
        self.document = DurableDocument(redis, Keyspace(provisioner, prefix).profile_results, path,
                                        ProfileResultsDocument, "the profiling results")

    def record(self, result: ProfileResult) -> None:
        """Store `result`, replacing one with the same key; keep the newest few per (service, variety, profile)."""
        def change(doc: ProfileResultsDocument) -> ProfileResultsDocument:
            results = [result, *(r for r in doc.results if r.key != result.key)]
            kept: list[ProfileResult] = []
            for r in results:
                if sum(1 for k in kept if k.config_key == r.config_key) < KEEP_PER_CONFIG:
                    kept.append(r)
            return doc.model_copy(update={"results": kept})

        self.document.update(change)

    def all(self) -> list[ProfileResult]:
        return sorted(self.document.read().results, key=lambda r: r.finished_at, reverse=True)

    def latest(self, service: str, variety: str | None, profile: str | None
               ) -> tuple[ProfileResult | None, ProfileResult | None]:
        """For (service, variety, profile): the newest successful result, and the newest of any outcome."""
        matching = [r for r in self.all() if r.config_key == (service, variety, profile)]
        measured = next((r for r in matching if r.outcome == "measured"), None)
        return measured, (matching[0] if matching else None)


def result_json(result: ProfileResult, current_hash: str | None) -> dict[str, Any]:
    """A result as the API shows it, with `stale` against the spec hash the settings give now."""
    out = result.model_dump(mode="json")
    out["stale"] = current_hash is not None and result.spec_hash != current_hash
    return out
