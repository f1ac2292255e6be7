# SPDX-License-Identifier: AGPL-3.0-or-later
"""The desired set: what the orchestrator asked this provisioner to run.

`<state_dir>/desired-<provisioner>.json` holds it, Redis a copy (`ozwald:<provisioner>:desired`), by the
rules of `ozwald.state.durable`: the API thread that posts a set numbers it (`generation`, one more than
the last, never reused, even after a restart of the provisioner or a Redis that came back empty) and
writes the file; the reconciler of the same process reads it from memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ozwald.records import DesiredInstance, DesiredSet, check_unique_names
from ozwald.state.durable import DurableDocument
from ozwald.state.keys import DEFAULT_PREFIX, Keyspace
from ozwald.state.resp import Client


class DesiredStateStore:
    """The desired set of one provisioner (`namespace`); thread-safe."""

    def __init__(self, redis: Client, namespace: str, state_dir: Path | str, *,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self.keys = Keyspace(namespace, prefix)
        self.path = Path(state_dir) / f"desired-{namespace}.json"
        self.document = DurableDocument(redis, self.keys.desired, self.path, DesiredSet, "the desired set",
                                        number="generation")

    def read(self) -> DesiredSet:
        """The current desired set (generation 0 and empty when nothing was ever set)."""
        return self.document.read()

    def replace(self, instances: Sequence[DesiredInstance]) -> DesiredSet:
        """Make `instances` the whole desired set, with the next generation; return the stored set.

        UpdateError for a name used twice; StateError if the file cannot be written (nothing changed). A
        damaged file is replaced: the orchestrator's new set is the way out of it.
        """
        items = tuple(instances)
        check_unique_names(items)
        desired = DesiredSet(instances=items, updated_at=datetime.now(UTC))
        return self.document.update(lambda _: desired, whole=True)
