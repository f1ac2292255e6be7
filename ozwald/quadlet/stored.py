# SPDX-License-Identifier: AGPL-3.0-or-later
"""A unit file Ozwald wrote, as read back from disk: a plain record, so decisions about it need no I/O."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ozwald.quadlet.naming import unit_labels


@dataclass(frozen=True)
class StoredUnit:
    instance: str
    path: Path
    persistent: bool
    text: str
    # When the file was last written (µs since the epoch, as systemd's timestamps): a unit's invocation
    # started before it runs an older spec. Read with the file, so no decision has to stat it.
    written_usec: int = 0
    swap_gate: str | None = None  # the text of the drop-in that gates its start (swapping on demand), if any

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        # Parsed once per file read: every status publish asks each unit which spec it runs.
        return unit_labels(self.text)

    def label(self, key: str) -> str | None:
        """One `ozwald.<key>` label; None when absent or empty."""
        return self.labels.get(key) or None

    @property
    def spec_hash(self) -> str | None:
        return self.label("spec-hash")
