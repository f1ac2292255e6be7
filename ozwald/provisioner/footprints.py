# SPDX-License-Identifier: AGPL-3.0-or-later
"""Measured footprints for admission: where an instance declares no `memory_gb`/`vram_gb`, the profiling
queue's fresh result for its (service, variety, profile), plus the margin, stands in. A result measured under
another spec hash (the settings changed since) is stale: never used, and the plan says so. Pure: the caller
reads the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from ozwald.config import ResolveError, Settings, resolve
from ozwald.provisioner.admission import Footprint, FootprintLookup
from ozwald.records import DesiredInstance
from ozwald.state import ProfileResult


def footprint_lookup(settings: Settings, results: Sequence[ProfileResult], margin: float) -> FootprintLookup:
    """The lookup admission calls per instance: (a usable footprint or None, a note when a result exists but
    is not used)."""

    def lookup(instance: DesiredInstance) -> tuple[Footprint | None, str | None]:
        try:
            spec_hash = resolve(settings, instance.service, instance.variety, instance.profile).spec_hash
        except ResolveError:
            return None, None
        key = (instance.service, instance.variety, instance.profile)
        measured = [r for r in results if r.config_key == key and r.outcome == "measured"]
        fresh = next((r for r in measured if r.spec_hash == spec_hash), None)
        if fresh is None:
            if measured:
                old = measured[0]
                return None, (f"profiling result of {_when(old)} is stale (spec {old.spec_hash}, now {spec_hash}): "
                              "not used")
            return None, None
        vram = max(fresh.vram_peak_mib.values(), default=0.0)
        parts = [f"RAM peak {fresh.ram_peak_mib:g} MiB" if fresh.ram_peak_mib is not None else "RAM not measured"]
        if vram:
            parts.append(f"VRAM peak {vram:g} MiB per GPU")
        source = (f"measured {_when(fresh)} (spec {fresh.spec_hash}): {', '.join(parts)}, "
                  f"+{margin * 100:g} % margin")
        memory = round((fresh.ram_peak_mib or 0) * (1 + margin) / 1024, 3) or None
        return Footprint(memory_gb=memory, vram_gb=round(vram * (1 + margin) / 1024, 3) or None,
                         source=source), None

    return lookup


def _when(result: ProfileResult) -> str:
    return result.finished_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
