# SPDX-License-Identifier: AGPL-3.0-or-later
"""The real reconciler (core and driver) against the simulated host (tests/support/simhost.py), as a test
drives it: post desired sets, reload settings, kill the provisioner, let time pass; the truth rules are
checked at every change the reconciler makes and after each of its turns."""

from __future__ import annotations

from collections.abc import Sequence

from ozwald.config import Settings
from ozwald.provisioner.events import DesiredChanged, Event, Nudge, SettingsChanged, Tick
from ozwald.provisioner.reconciler import Reconciler
from ozwald.quadlet.naming import unit_labels
from ozwald.records import ActiveService, DesiredInstance, DesiredSet
from tests.support.simhost import Connection, SimHost


class TruthViolation(AssertionError):
    pass


class SimRun:
    """The real driver and core against a simulated host, with the truth rules checked at every change.

    Each published `available` must be true at every instant until the next publish: the instance's unit is
    ready and runs the spec (hash, variety, profile) the status names. `idle`: its socket listens and no
    container of it runs. A `failed` status carries a reason.
    """

    def __init__(self, settings: Settings, resync_interval: float = 60.0) -> None:
        self.host = SimHost()
        self.settings = settings
        self.desired = DesiredSet()
        self.published: list[ActiveService] = []
        self.history: list[tuple[float, dict[str, str]]] = []
        self.desired_unreadable = False
        self.resync_interval = resync_interval
        # What the reconciler's own commands change is checked at once; what the world does (a crash, a timer)
        # is checked once the reconciler has had its turn to hear of it, as a client would see it.
        self.host.on_change = lambda: self.check() if self.in_turn else None
        self.in_turn = False
        self.reconciler = self._new_reconciler()
        self.turns = 0

    def _new_reconciler(self) -> Reconciler:
        return Reconciler(self.settings, self._read_desired, self.host, self.host, self._publish,
                          resync_interval=self.resync_interval, explain=lambda _, state: self.host.explain(state),
                          clock=lambda: self.host.now, knock=self.host.knock, open_gate=self.host.open_gate,
                          count_connections=self.host.count_connections)

    def _read_desired(self) -> DesiredSet:
        if self.desired_unreadable:
            raise OSError("the desired set cannot be read (simulated)")
        return self.desired

    def _publish(self, services: list[ActiveService]) -> None:
        self.published = services
        self.history.append((self.host.now, {s.name: s.status for s in services}))
        self.check()

    # What the orchestrator, the operator and the world do ---------------------------------------------------
    def turn(self, events: Sequence[Event]) -> None:
        self.in_turn = True
        try:
            self.reconciler.turn([*self.host.take_events(), *events])
        finally:
            self.in_turn = False
        self.turns += 1
        self.check()

    def post(self, *instances: DesiredInstance) -> None:
        self.desired = DesiredSet(generation=self.desired.generation + 1, instances=tuple(instances))
        self.turn([DesiredChanged(self.desired.generation)])

    def connect(self, name: str, duration: float = 0.0) -> Connection:
        """A client connects to an on-demand instance's socket (the reconciler hears of what follows)."""
        connection = self.host.connect(name, duration)
        self.turn([])
        return connection

    def nudge(self, name: str, operation: str) -> None:
        self.turn([Nudge(name, operation)])

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        self.turn([SettingsChanged(settings)])

    def restart_provisioner(self) -> None:
        """kill -9 and a new process: nothing of the old one's memory survives; it adopts what runs."""
        self.host.take_events()
        self.published = []
        self.reconciler = self._new_reconciler()
        self.turn([DesiredChanged()])

    def run(self, seconds: float) -> None:
        """Let time pass: the host's timers fire, the driver turns whenever it would wake up or hear news."""
        end = self.host.now + seconds
        same_instant = 0
        while True:
            self.turn([Tick()])
            if self.host.events:
                same_instant += 1
                if same_instant > 1000:  # the reconciler and the host undo each other without time passing
                    raise TruthViolation(f"t={self.host.now:.2f}: livelock: 1000 turns in one instant")
                continue
            same_instant = 0
            wake = self.host.now + max(self.reconciler.core.wait_seconds(self.host.now), 0.05)
            timer = self.host.next_timer()
            step = min(wake, timer if timer is not None else wake, end)
            if step >= end and self.host.now >= end:
                return
            self.host.advance(step)

    # The rules ------------------------------------------------------------------------------------------------
    def status(self, name: str) -> ActiveService:
        [service] = [s for s in self.published if s.name == name]
        return service

    def check(self) -> None:
        for service in self.published:
            if service.status == "available" and service.info.get("unit"):
                ready = self.host.ready(service.name)
                if ready is None:
                    raise TruthViolation(f"t={self.host.now:.2f}: {service.name} said available, nothing ready")
                labels = unit_labels(ready.text)
                said = (service.info.get("spec_hash"), service.variety, service.profile)
                runs = (ready.spec_hash, labels.get("variety") or None, labels.get("profile") or None)
                if said != runs:
                    raise TruthViolation(f"t={self.host.now:.2f}: {service.name} said available as {said}, "
                                         f"runs {runs}")
            if service.status == "idle" and (self.host.running(service.name) or not self.host.listening(service.name)):
                raise TruthViolation(f"t={self.host.now:.2f}: {service.name} said idle, but its container runs "
                                     "or its socket does not listen")
            if service.status == "failed" and not service.info.get("reason"):
                raise TruthViolation(f"{service.name} failed without a reason")

    def sequence(self, name: str) -> list[str]:
        """The statuses an instance went through, each change once."""
        seen: list[str] = []
        for _, statuses in self.history:
            status = statuses.get(name)
            if status is not None and (not seen or seen[-1] != status):
                seen.append(status)
        return seen
