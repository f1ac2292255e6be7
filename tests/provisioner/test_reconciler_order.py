# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the reconciler has published at the moment it queues each job, against a stand-in for systemd's
manager that records every call (the real systemd is in tests/integration; this checks an order).

Jobs are queued one call after another, and on a busy systemd 100 of them take seconds while the first
units already go down: a unit must never be queued for a stop or a restart while the statuses still say
`available` for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ozwald.config import Settings
from ozwald.provisioner.reconciler import Reconciler
from ozwald.records import ActiveService, DesiredInstance, DesiredSet
from ozwald.systemd.errors import SystemdError
from ozwald.systemd.protocol import UnitState
from ozwald.units.store import UnitStore

SETTINGS = Settings.model_validate({"services": [
    {"name": "m", "image": "localhost/x:latest", "min_uptime": "1s",
     "profiles": {"small": {"environment": {"N": "1"}}, "large": {"environment": {"N": "2"}}}},
]})


class RecordingSystemd:
    """Units become active at once on start and inactive on stop; each job call notes what was published."""

    alive = True

    def __init__(self, published: Callable[[], dict[str, str]]) -> None:
        self.units: dict[str, UnitState] = {}
        self.published = published
        self.jobs: list[tuple[str, str, str | None]] = []  # (operation, unit, its published status then)
        self._serial = 0

    def list_units(self, pattern: str = "ozwald-*") -> list[UnitState]:
        return [state for state in self.units.values() if state.load_state == "loaded"]

    def unit_states(self, units: Sequence[str]) -> list[UnitState]:
        return [self.units.get(u, UnitState(u, "not-found", "inactive", "dead")) for u in units]

    def enqueue(self, operation: str, units: Sequence[str]) -> dict[str, str | SystemdError]:
        out: dict[str, str | SystemdError] = {}
        for unit in units:
            name = unit.removeprefix("ozwald-").removesuffix(".service")
            self.jobs.append((operation, unit, self.published().get(name)))
            now = time.time_ns() // 1000 + 1_000_000  # started after its file was written
            active = operation != "stop"
            self.units[unit] = UnitState(unit, "loaded", "active" if active else "inactive",
                                         "running" if active else "dead", exec_main_start_usec=now,
                                         invocation_id=f"inv{self._serial}")
            self._serial += 1
            out[unit] = f"/org/freedesktop/systemd1/job/{self._serial}"
        return out

    def wait_for(self, unit: str, predicate: Callable[[UnitState], bool], timeout: float) -> UnitState:
        state = self.units[unit]
        assert predicate(state)
        return state

    def reload(self) -> None:
        pass

    def reset_failed(self, unit: str) -> None:
        pass

    def reset_failed_units(self, units: Sequence[str]) -> dict[str, SystemdError]:
        return {}

    @contextmanager
    def watch(self, deliver: Callable[[Any], None]) -> Iterator[None]:
        yield


def test_nothing_is_stopped_or_restarted_while_it_is_still_published_available(tmp_path: Path) -> None:
    latest: dict[str, str] = {}

    def publish(services: list[ActiveService]) -> None:
        latest.clear()
        latest.update({s.name: s.status for s in services})

    desired = DesiredSet()
    systemd = RecordingSystemd(lambda: dict(latest))
    store = UnitStore(runtime_dir=tmp_path / "run", persistent_dir=tmp_path / "etc")
    reconciler = Reconciler(SETTINGS, lambda: desired, systemd, store, publish)

    fleet = tuple(DesiredInstance(name=f"m{i}", service="m", profile="small") for i in range(12))
    desired = DesiredSet(generation=1, instances=fleet)
    reconciler.run_once()
    reconciler.refresh_statuses()
    assert set(latest.values()) == {"available"} and len(latest) == 12

    # A profile change for half of them (restarts), the other half removed (stops).
    desired = DesiredSet(generation=2, instances=tuple(replace_profile(i, "large") for i in fleet[:6]))
    reconciler.run_once()
    queued = [(op, unit, seen) for op, unit, seen in systemd.jobs if op in ("stop", "restart")]
    assert [op for op, _, _ in queued] == ["stop"] * 6 + ["restart"] * 6
    assert all(seen in ("stopping", "starting") for _, _, seen in queued), queued
    reconciler.refresh_statuses()
    assert latest == {f"m{i}": "available" for i in range(6)}


def replace_profile(instance: DesiredInstance, profile: str) -> DesiredInstance:
    return instance.model_copy(update={"profile": profile})

