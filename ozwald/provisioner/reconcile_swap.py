# SPDX-License-Identifier: AGPL-3.0-or-later
"""Swapping on-demand instances that do not fit together: who waits, what stops, whose start goes on.

A start of such an instance, triggered by its socket, waits at a gate (`ExecStartPre=`, see
`ozwald.quadlet.on_demand.render_swap_gate`) until this arbiter lets it go on. The rules, in the order starts
reached their gates (first come, first served):

- a partner whose start is past its gate (loading its model) is never interrupted: the newcomer waits until
  it is ready (its first requests are served), then stops it;
- partners that run are stopped once their requests in flight have ended (at most their `swap_drain`), and
  the gate opens once they are down, so the GPU memory is free before the model loads;
- a start that waits blocks the later starts of its own partners, so they cannot overtake it.

`swap_step` and `drain_step` are pure functions of the units' states, like `plan`; `SwapArbiter` keeps what
they need between turns (gates opened, partners draining) and answers with commands, with no I/O: the core
executes them and asks again on news.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ozwald.provisioner import reconcile_messages as m
from ozwald.quadlet.naming import unit_name
from ozwald.systemd.protocol import UnitState

DOWN = ("inactive", "failed")


def at_gate(state: UnitState | None) -> bool:
    return state is not None and state.active_state == "activating" and state.sub_state == "start-pre"


def _loading(state: UnitState | None) -> bool:
    return state is not None and state.active_state == "activating" and state.sub_state not in (
        "start-pre", "auto-restart")


GATE_RETRY_S = 0.05  # a gate nobody read yet (its shell is starting) is opened again this much later
COUNT_EVERY_S = 0.25  # how often those requests are counted meanwhile (nothing signals their end)


@dataclass(frozen=True)
class SwapStep:
    stop: tuple[str, ...] = ()  # partners in the way of a start, to stop once their requests in flight end
    open: tuple[str, ...] = ()  # instances whose gate opens now
    waiting: dict[str, str] = field(default_factory=dict)  # instance at its gate → the starts it waits for
    stopping: dict[str, tuple[str, ...]] = field(default_factory=dict)  # instance at its gate → partners to stop


@dataclass(frozen=True)
class Drain:
    """What to do with the partners a swap stops: stop those without a request in flight (or after their
    `swap_drain`), count the connections of the others again."""

    stop: tuple[str, ...] = ()
    count: tuple[str, ...] = ()
    draining: tuple[str, ...] = ()  # still serving: the waiting start says so


def drain_step(want: tuple[str, ...], since: Mapping[str, float], counted: Mapping[str, tuple[float, int]],
               asked: Mapping[str, float], limit: Mapping[str, float], now: float) -> Drain:
    """`since`: partner → when a start first wanted it stopped; `counted`: partner → (when, connections from its
    proxy to its container); `asked`: partner → when they were last asked for; `limit`: partner → its
    `on_demand.swap_drain`. A request in flight on a partner is not cut by a swap, unless it outlasts that (a
    stream that never ends, or clients that keep connections open)."""
    stop, count, draining = [], [], []
    for name in want:
        began = since.get(name, now)
        at, connections = counted.get(name, (float("-inf"), -1))
        if now - began >= limit.get(name, 0.0) or (at >= began and connections == 0):
            stop.append(name)
            continue
        draining.append(name)
        if now - asked.get(name, float("-inf")) >= COUNT_EVERY_S:
            count.append(name)
    return Drain(tuple(stop), tuple(count), tuple(draining))


def swap_step(groups: Mapping[str, tuple[str, ...]], states: Mapping[str, UnitState], busy: Collection[str],
              opened: Mapping[str, str]) -> SwapStep:
    """`groups`: instance → the instances it swaps with; `busy`: units with a job queued; `opened`: instance →
    the invocation whose gate was opened (it is past the gate, or about to be)."""
    def state(name: str) -> UnitState | None:
        return states.get(unit_name(name))

    def passed(name: str) -> bool:
        s = state(name)
        return at_gate(s) and s is not None and opened.get(name) == s.invocation_id

    arrived = sorted((n for n in groups if at_gate(state(n)) and not passed(n)),
                     key=lambda n: (getattr(state(n), "state_change_usec", 0), n))
    claimed = {n for n in groups if _loading(state(n)) or passed(n)}
    stop: list[str] = []
    open_now: list[str] = []
    waiting: dict[str, str] = {}
    stopping: dict[str, tuple[str, ...]] = {}
    for name in arrived:
        partners = groups[name]
        ahead = sorted(p for p in partners if p in claimed)
        claimed.add(name)  # whatever happens to it, its later partners queue behind it
        if ahead:
            waiting[name] = f"waits for the start of {', '.join(ahead)} to end, then stops it (they swap)"
            continue
        up = sorted(p for p in partners if (s := state(p)) is not None and s.active_state not in DOWN
                    and not at_gate(s))
        if up:
            stop += [p for p in up if unit_name(p) not in busy
                     and (s := state(p)) is not None and s.active_state != "deactivating"]
            stopping[name] = tuple(up)
            continue
        open_now.append(name)
    return SwapStep(tuple(dict.fromkeys(stop)), tuple(open_now), waiting, stopping)


@dataclass(frozen=True)
class Decision:
    commands: tuple[m.Command, ...] = ()
    stop: tuple[str, ...] = ()  # units whose stop the commands queue (the core shows them as decided)
    news: bool = False  # what a status shows changed


class SwapArbiter:
    """The state of the swaps under way, for the reconciler's core: whose gate Ozwald opened, which partners
    it waits to stop and their requests in flight. Events in, commands out, like the core itself."""

    def __init__(self) -> None:
        self.opened: dict[str, str] = {}  # instance → the invocation whose gate Ozwald opened
        self.gate_retry: dict[str, float] = {}  # instance → when to open its gate again (nobody read it)
        self.waiting: dict[str, str] = {}  # instance at its gate → what it waits for, as its status shows
        self.draining: dict[str, float] = {}  # partner a start wants stopped → since when
        self.counted: dict[str, tuple[float, int]] = {}  # partner → (when, its requests in flight)
        self.count_asked: dict[str, float] = {}  # partner → when its requests in flight were last asked for

    def handle(self, event: m.GateClosed | m.ConnectionsCounted, now: float) -> None:
        if isinstance(event, m.GateClosed):
            self.opened.pop(event.name, None)
            self.gate_retry[event.name] = now + GATE_RETRY_S
        else:
            self.counted.update((name, (now, count)) for name, count in event.counts.items())

    def due(self) -> float | None:
        """When to decide again with nothing else happening: a gate to open again, connections to count."""
        times = [*self.gate_retry.values(),
                 *(at + COUNT_EVERY_S for name, at in self.count_asked.items() if name in self.draining)]
        return min(times) if times else None

    def decide(self, groups: Mapping[str, tuple[str, ...]], on_demand: Mapping[str, m.Rendered],
               states: Mapping[str, UnitState], busy: Collection[str], now: float) -> Decision:
        """`groups`: every on-demand instance → the instances it swaps with (none for most): one out of any
        group now may still be at a gate its old drop-in set up."""
        self.opened = {n: run for n, run in self.opened.items() if n in groups
                       and (state := states.get(unit_name(n))) is not None and state.invocation_id == run}
        step = swap_step(groups, states, busy, self.opened)
        self.draining = {n: self.draining.get(n, now) for n in step.stop}
        self.counted = {n: c for n, c in self.counted.items() if n in self.draining}
        self.count_asked = {n: at for n, at in self.count_asked.items() if n in self.draining}
        limit = {n: o.unit.on_demand.swap_drain for n, o in on_demand.items() if o.unit.on_demand is not None}
        drain = drain_step(step.stop, self.draining, self.counted, self.count_asked, limit, now)
        waiting = dict(step.waiting)
        for name, partners in step.stopping.items():
            serving = [p for p in partners if p in drain.draining]
            most = max((limit.get(p, 0.0) for p in serving), default=0.0)
            waiting[name] = (f"waits for the requests in flight of {', '.join(serving)} to end (at most "
                             f"{most:g} s), then stops it (they swap)") if serving else (
                f"waits for {', '.join(partners)} to stop (they swap)")
        news = waiting != self.waiting
        self.waiting = waiting
        for name in [n for n, at in self.gate_retry.items() if at <= now or n not in groups]:
            del self.gate_retry[name]
        opens = [n for n in step.open if n not in self.gate_retry]
        for name in opens:
            state = states.get(unit_name(name))
            self.opened[name] = state.invocation_id if state is not None else ""
        stop = tuple(unit_name(n) for n in drain.stop)
        ports = {n: o.unit.on_demand.backend.host for n in drain.count
                 if (o := on_demand.get(n)) is not None and o.unit.on_demand is not None
                 and o.unit.on_demand.backend.host is not None}
        self.count_asked.update((name, now) for name in ports)
        commands: list[m.Command] = []
        if stop:  # published before the stop is queued: `available` must not outlive the container
            commands += [m.Publish(), m.Enqueue("stop", stop)]
        commands += [m.OpenGate(n) for n in opens]
        if ports:
            commands.append(m.CountConnections(ports))
        return Decision(tuple(commands), stop, news or bool(opens or stop))
