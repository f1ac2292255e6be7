# SPDX-License-Identifier: AGPL-3.0-or-later
"""A real `Provisioner` (core.py) on a real Redis, with its host-facing parts stood in.

The reconciler stand-in previews with the real renderer and the real `plan()` over a real UnitStore in a
temporary directory (what the reconciler's own preview does), and records the wake-ups it gets; the
resource monitor reports a fixed CPU-only host; systemd answers the health probe. Nothing here needs
root, systemd or Podman, so these tests run everywhere in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ozwald.config import Settings, parse_settings
from ozwald.provisioner.core import Provisioner
from ozwald.provisioner.plan import Target, plan
from ozwald.provisioner.requests import effective_spec
from ozwald.quadlet import render_unit
from ozwald.records import ActiveService, DesiredSet, PlanEntry
from ozwald.resources.models import HostSnapshot
from ozwald.state import DesiredStateStore, ProfileQueue, StatusCache
from ozwald.state.resp import Client
from ozwald.units import UnitStore

GIB = 1024**3


class StubReconciler:
    def __init__(self, settings: Settings, units: UnitStore, read_desired: Callable[[], DesiredSet],
                 publish: Callable[[list[ActiveService]], None]) -> None:
        self.settings = settings
        self.units = units
        self.read_desired = read_desired
        self.publish = publish
        self.woken: list[int] = []
        self.nudges: list[tuple[str, str]] = []  # (instance, wake|sleep)
        self.woke = threading.Event()
        self.alive = False
        self.bus_lost = threading.Event()

    def start(self) -> None:
        self.alive = True

    def stop(self) -> None:
        self.alive = False

    def wake(self, generation: int) -> None:
        self.woken.append(generation)
        self.woke.set()

    def nudge(self, name: str, operation: str) -> None:
        self.nudges.append((name, operation))

    def replace_settings(self, settings: Settings) -> None:
        self.settings = settings

    def preview(self, desired: DesiredSet) -> list[PlanEntry]:
        targets = []
        for instance in desired.instances:
            spec = effective_spec(self.settings, instance)
            if spec.type == "container":
                targets.append(Target(instance, render_unit(spec, instance.name).spec_hash))
        return plan(self.settings, targets, self.units.existing(), {})


class StubResources:
    """A CPU-only host with 8 cores and 16 GiB, all free."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def snapshot(self) -> HostSnapshot:
        return HostSnapshot(taken_at=0.0, cpu_cores_total=8, cpu_load_percent=None, cpu_cores_available=8.0,
                            ram_total_bytes=16 * GIB, ram_available_bytes=16 * GIB)


class StubSystemd:
    def unit_state(self, name: str) -> Any:
        return None


def make_provisioner(settings_text: str, client: Client, tmp_path: Path, resources: Any = None
                     ) -> tuple[Provisioner, StubReconciler]:
    """A Provisioner named `test` for these settings (on `resources`, default StubResources); the caller
    stops it."""
    settings = parse_settings(settings_text)
    units = UnitStore(tmp_path / "run", tmp_path / "etc")
    made: list[StubReconciler] = []

    def factory(read_desired: Callable[[], DesiredSet], publish: Callable[[list[ActiveService]], None]) -> Any:
        made.append(StubReconciler(settings, units, read_desired, publish))
        return made[0]

    state = tmp_path / "state"
    provisioner = Provisioner(settings, DesiredStateStore(client, "test", state), StatusCache(client, "test"),
                              ProfileQueue(client, "test", settings=settings, state_dir=state),
                              resources or StubResources(), StubSystemd(), factory)  # type: ignore[arg-type]
    return provisioner, made[0]
