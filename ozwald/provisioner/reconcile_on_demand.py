# SPDX-License-Identifier: AGPL-3.0-or-later
"""The reconciler core's rules particular to on-demand instances, as pure functions of what the core holds.

An on-demand instance has three units: its socket (what must run while it is desired), the proxy the socket
starts, and the container's, which the proxy wants and which stops when unneeded. These functions say which
units an instance has, which state its plan reads, what to stop before it changes, which proxies to stop,
and what its status shows of the socket; the core (`reconcile_core`) keeps the state and decides when.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ozwald.provisioner import reconcile_messages as m
from ozwald.provisioner import status as st
from ozwald.quadlet.naming import proxy_name, socket_name, unit_name
from ozwald.quadlet.on_demand import listen_address
from ozwald.records import OnDemandInfo
from ozwald.systemd.protocol import UnitState


def units_of(name: str) -> tuple[str, str, str]:
    """Every unit an instance can have, in the order they are stopped: an on-demand instance's socket first (a
    connection still in its backlog would start proxy and container again), its proxy, the container's."""
    return socket_name(name), proxy_name(name), unit_name(name)


def primary(name: str, on_demand: Collection[str]) -> str:
    """The unit whose being down means the instance is not served: the socket of an on-demand instance."""
    return socket_name(name) if name in on_demand else unit_name(name)


def plan_states(states: Mapping[str, UnitState], on_demand: Collection[str]) -> dict[str, UnitState]:
    """The states the plan reads: an on-demand instance is served while its socket listens, so its socket's
    state stands for it (its container being down is normal)."""
    planned = dict(states)
    for name in on_demand:
        planned.pop(unit_name(name), None)
        if socket_name(name) in states:
            planned[unit_name(name)] = states[socket_name(name)]
    return planned


def stop_before_change(name: str, on_demand: Collection[str], restart: bool) -> tuple[str, ...]:
    """Units that must be down before a deliberate start or restart: all of an on-demand instance that changes
    (a connection waiting in its socket would start the old spec again each time its container stopped; the
    socket listens again with the new spec), and before a plain instance starts, a socket and proxy left from
    when it ran on demand (the socket holds its port). Which of them are up is the caller's to check."""
    if name in on_demand:
        return units_of(name) if restart else ()
    return socket_name(name), proxy_name(name)


def stray_proxies(on_demand: Collection[str], states: Mapping[str, UnitState], busy: Collection[str]
                  ) -> tuple[str, ...]:
    """Proxies whose container failed: stopped, so that the next connection tries the container again (a
    running proxy only closes connections). Failed starts are bounded by the container's start limit."""
    return tuple(proxy_name(n) for n in sorted(on_demand)
                 if (c := states.get(unit_name(n))) is not None and c.active_state == "failed"
                 and (p := states.get(proxy_name(n))) is not None and p.active_state not in ("inactive", "failed")
                 and unit_name(n) not in busy and proxy_name(n) not in busy)


def socket_observed(name: str, outcome: m.Rendered, states: Mapping[str, UnitState], jobs: list[str]
                    ) -> st.SocketObserved:
    units = outcome.unit.on_demand
    assert units is not None
    info = OnDemandInfo(socket=socket_name(name), listen=listen_address(units.public), idle_stop=units.idle_stop,
                        exclusive_with=list(outcome.exclusive_with))
    return st.SocketObserved(states.get(socket_name(name)), jobs[-1] if jobs else None, info)
