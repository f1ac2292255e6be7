# SPDX-License-Identifier: AGPL-3.0-or-later
"""Swapping on-demand instances that do not fit together: who waits, what stops, whose start goes on.

A start of such an instance, triggered by its socket, waits at a gate (`ExecStartPre=`, see
`ozwald.quadlet.on_demand.render_swap_gate`) until this arbiter lets it go on. The rules, in the order starts
reached their gates (first come, first served):

- a partner whose start is past its gate (loading its model) is never interrupted: the newcomer waits until
  it is ready (its first requests are served), then stops it;
- partners that run are stopped once their requests in flight have ended (at most SWAP_DRAIN_S), and the
  gate opens once they are down, so the GPU memory is free before the model loads;
- a start that waits blocks the later starts of its own partners, so they cannot overtake it.

A pure function of the units' states, like `plan`; the core executes its answer and asks again on news.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ozwald.quadlet.naming import unit_name
from ozwald.systemd.protocol import UnitState

DOWN = ("inactive", "failed")


def at_gate(state: UnitState | None) -> bool:
    return state is not None and state.active_state == "activating" and state.sub_state == "start-pre"


def _loading(state: UnitState | None) -> bool:
    return state is not None and state.active_state == "activating" and state.sub_state not in (
        "start-pre", "auto-restart")


SWAP_DRAIN_S = 30.0  # how long a start waits for a running partner's requests in flight before stopping it
COUNT_EVERY_S = 0.25  # how often those requests are counted meanwhile (nothing signals their end)


@dataclass(frozen=True)
class SwapStep:
    stop: tuple[str, ...] = ()  # partners in the way of a start, to stop once their requests in flight end
    open: tuple[str, ...] = ()  # instances whose gate opens now
    waiting: dict[str, str] = field(default_factory=dict)  # instance at its gate → the starts it waits for
    stopping: dict[str, tuple[str, ...]] = field(default_factory=dict)  # instance at its gate → partners to stop


@dataclass(frozen=True)
class Drain:
    """What to do with the partners a swap stops: stop those without a request in flight (or after
    SWAP_DRAIN_S), count the connections of the others again."""

    stop: tuple[str, ...] = ()
    count: tuple[str, ...] = ()
    draining: tuple[str, ...] = ()  # still serving: the waiting start says so


def drain_step(want: tuple[str, ...], since: Mapping[str, float], counted: Mapping[str, tuple[float, int]],
               asked: Mapping[str, float], now: float) -> Drain:
    """`since`: partner → when a start first wanted it stopped; `counted`: partner → (when, connections from its
    proxy to its container); `asked`: partner → when they were last asked for. A request in flight on a partner
    is not cut by a swap, unless it outlasts SWAP_DRAIN_S (a stream that never ends, or clients that keep
    connections open)."""
    stop, count, draining = [], [], []
    for name in want:
        began = since.get(name, now)
        at, connections = counted.get(name, (float("-inf"), -1))
        if now - began >= SWAP_DRAIN_S or (at >= began and connections == 0):
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
