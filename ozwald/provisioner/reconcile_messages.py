# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the reconciler's core and its driver tell each other: the outcome of rendering each desired instance,
the events fed to the core, the commands it answers with, and the report of a pass. Plain records, so the
core's decisions can be driven and checked without a host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ozwald.config import Settings
from ozwald.provisioner.events import DesiredChanged, Nudge
from ozwald.quadlet.render import RenderedUnit
from ozwald.quadlet.stored import StoredUnit
from ozwald.records import DesiredInstance, DesiredSet, PlanEntry
from ozwald.systemd.protocol import JobRemoved, UnitChanged, UnitState


# What the driver renders for each desired instance ---------------------------------------------------
@dataclass(frozen=True)
class Rendered:
    instance: DesiredInstance
    unit: RenderedUnit
    persistent: bool
    image: str
    has_health: bool
    exclusive_with: tuple[str, ...] = ()  # on-demand instances that cannot run beside it on its GPUs

    @property
    def on_demand(self) -> bool:
        return self.unit.on_demand is not None


@dataclass(frozen=True)
class Unresolved:
    """A desired instance whose spec cannot be resolved or rendered (settings changed under it)."""

    instance: DesiredInstance
    reason: str


@dataclass(frozen=True)
class Resource:
    instance: DesiredInstance
    kind: str


Outcome = Rendered | Unresolved | Resource


# Events (besides DesiredChanged, for a pass, and systemd's UnitChanged and JobRemoved) --------------------
@dataclass(frozen=True)
class Snapshot:
    """The result of ReadHost: the inputs of one pass."""

    settings: Settings
    desired: DesiredSet
    outcomes: Sequence[Outcome]
    files: Mapping[str, StoredUnit]
    states: Mapping[str, UnitState]


@dataclass(frozen=True)
class Queued:
    operation: str
    jobs: Mapping[str, str]  # unit → job path
    refused: Mapping[str, str]  # unit → systemd's message


@dataclass(frozen=True)
class UnitsRead:
    states: Sequence[UnitState]


@dataclass(frozen=True)
class FilesRead:
    files: Mapping[str, StoredUnit]


@dataclass(frozen=True)
class Explained:
    name: str
    state_change_usec: int
    reason: str


@dataclass(frozen=True)
class GateClosed:
    """Nobody read the swap gate of an instance when Ozwald opened it (its gate process had not opened the FIFO
    yet, or had just ended): opened again shortly, if it is still at its gate."""

    name: str


@dataclass(frozen=True)
class ConnectionsCounted:
    """Connections from each instance's proxy to its container, now: requests in flight."""

    counts: Mapping[str, int]


__all__ = ["Nudge"]  # re-exported: the core's events in one place

Event = (DesiredChanged | Snapshot | Queued | UnitsRead | FilesRead | Explained | Nudge | GateClosed
         | ConnectionsCounted | UnitChanged | JobRemoved)


# Commands ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadHost:
    """Read the desired set, render it, read the unit files and states: answered with a Snapshot."""


@dataclass(frozen=True)
class ReadUnits:
    units: tuple[str, ...]


@dataclass(frozen=True)
class ReadFiles:
    pass


@dataclass(frozen=True)
class Write:
    unit: RenderedUnit
    persistent: bool


@dataclass(frozen=True)
class Remove:
    name: str


@dataclass(frozen=True)
class Reload:
    pass


@dataclass(frozen=True)
class ResetFailed:
    units: tuple[str, ...]


@dataclass(frozen=True)
class Enqueue:
    operation: str  # start, restart, stop
    units: tuple[str, ...]


@dataclass(frozen=True)
class Knock:
    """Connect to an on-demand instance's socket and close: systemd starts its proxy and container, which then
    idle out like after any connection (a proxy started without one would never idle out)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True)
class Publish:
    """Compose and publish the statuses (explaining new failures first: `unexplained`)."""


@dataclass(frozen=True)
class OpenGate:
    """Let the start of a swapping on-demand instance go on: write a line to the FIFO its gate reads."""

    name: str


@dataclass(frozen=True)
class CountConnections:
    """Count the connections from on-demand instances' proxies to their containers (instance → backend port)."""

    ports: Mapping[str, int]


Command = (ReadHost | ReadUnits | ReadFiles | Write | Remove | Reload | ResetFailed | Enqueue | Knock | OpenGate
           | CountConnections | Publish)


@dataclass
class PassReport:
    generation: int
    entries: list[PlanEntry] = field(default_factory=list)
    reloaded: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
