# SPDX-License-Identifier: AGPL-3.0-or-later
"""On-demand instances that swap on one GPU (issue 18), on the simulated host: the real core and driver, each
start held at its swap gate until Ozwald has stopped the partners in its way. Besides the truth rules of
SimRun, every change is checked for the swap rule: two partners never run past their gates at once (the GPU
memory of one is free before the other loads), and no start past its gate is interrupted by a partner's."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ozwald.config import Settings
from ozwald.records import DesiredInstance
from tests.support.simrun import SimRun, TruthViolation

IDLE_S = 5.0
SWAP_DRAIN_S = 30.0  # on_demand.swap_drain's default
NAMES = ("chat", "code", "embed")
PARTNERS = {"chat": ("code", "embed"), "code": ("chat",), "embed": ("chat",)}  # code + embed fit together


def swap_settings(drain: dict[str, str] | None = None) -> Settings:
    drains = drain or {}
    services: list[dict[str, Any]] = [
        {"name": name, "image": "localhost/x:latest", "ports": [f"{8090 + i}:8000"],
         "environment": {"SIM": "healthy:3"}, "health": {"command": ["true"]},
         "on_demand": {"idle_stop": f"{IDLE_S}s", **({"swap_drain": drains[name]} if name in drains else {})}}
        for i, name in enumerate(NAMES)]
    return Settings.model_validate({"services": services})


def instances() -> list[DesiredInstance]:
    return [DesiredInstance(name=n, service=n, exclusive_with=PARTNERS[n]) for n in NAMES]


class SwapRun(SimRun):
    """SimRun that also checks the swap rule at every change of the host."""

    def __init__(self, drain: dict[str, str] | None = None) -> None:
        super().__init__(swap_settings(drain))
        self.loading_since: dict[str, float] = {}
        truth = self.host.on_change

        def on_change() -> None:
            self.check_swap()
            truth()

        self.host.on_change = on_change

    def past_gate(self, name: str) -> bool:
        unit = self.host.units.get(f"ozwald-{name}.service")
        return unit is not None and unit.active_state in ("activating", "active", "deactivating") \
            and unit.sub_state != "start-pre"

    def check_swap(self) -> None:
        for instance in self.desired.instances:  # the groups of the desired set as posted
            name = instance.name
            for partner in instance.exclusive_with:
                if self.past_gate(name) and self.past_gate(partner):
                    raise TruthViolation(f"t={self.host.now:.2f}: {name} and {partner} run at once")
        for name in NAMES:
            unit = self.host.units.get(f"ozwald-{name}.service")
            loading = unit is not None and (unit.active_state, unit.sub_state) == ("activating", "start")
            if loading:
                self.loading_since.setdefault(name, self.host.now)
            elif name in self.loading_since and unit is not None and unit.active_state == "deactivating":
                raise TruthViolation(f"t={self.host.now:.2f}: {name}'s start was interrupted")
            else:
                self.loading_since.pop(name, None)


def idle_run(drain: dict[str, str] | None = None) -> SwapRun:
    sim = SwapRun(drain)
    sim.post(*instances())
    sim.run(3)
    assert all(sim.status(n).status == "idle" for n in NAMES)
    return sim


def test_the_swap_group_is_shown_and_only_grouped_instances_get_a_gate() -> None:
    sim = idle_run()
    on_demand = sim.status("chat").info.on_demand
    assert on_demand is not None and on_demand.exclusive_with == ["code", "embed"]
    assert sim.host.units["ozwald-chat.service"].config.gated
    assert "ozwald-code.service" in sim.host.companions["chat"]["ozwald-chat.service.d/50-ozwald-swap.conf"]


def test_a_request_to_b_while_a_is_warm_stops_a_first_then_serves_b() -> None:
    sim = idle_run()
    first = sim.connect("chat")
    sim.run(4)
    assert first.outcome == "served" and sim.status("chat").status == "available"
    second = sim.connect("code")
    assert sim.status("code").status == "starting"
    assert sim.status("code").info["pending"]["job"] == "waits for chat to stop (they swap)"
    sim.run(4)
    assert second.outcome == "served" and sim.status("code").status == "available"
    assert sim.status("chat").status == "idle" and not sim.host.running("chat")
    assert sim.sequence("chat")[-2:] == ["stopping", "idle"]


def test_partners_that_fit_together_run_together() -> None:
    sim = idle_run()
    code, embed = sim.connect("code"), sim.connect("embed")
    sim.run(4)
    assert code.outcome == embed.outcome == "served"
    assert sim.status("code").status == sim.status("embed").status == "available"


def test_a_start_under_way_is_never_interrupted_and_both_requests_are_served() -> None:
    """systemd's Conflicts= cancels chat's start and resets its waiting request (a probe in the test host); the
    gate serves them in turn."""
    sim = idle_run()
    chat = sim.connect("chat")
    sim.run(1)
    code = sim.connect("code")
    sim.run(1)
    again = sim.connect("chat")  # chat is still loading: held behind nothing, code waits for it
    sim.run(12)
    assert chat.outcome == "served" and again.outcome == "served" and code.outcome == "served"
    assert chat.served_at is not None and code.served_at is not None and chat.served_at < code.served_at


def test_the_provisioner_restarted_while_a_start_waits_at_its_gate_still_lets_it_go_on() -> None:
    sim = idle_run()
    sim.connect("chat")
    sim.run(4)
    code = sim.connect("code")
    sim.restart_provisioner()
    sim.run(5)
    assert code.outcome == "served" and not sim.host.running("chat")


def test_a_request_in_flight_is_not_cut_by_a_swap() -> None:
    sim = idle_run()
    long = sim.connect("chat", duration=6)
    sim.run(4)  # chat is ready at 3 s and answers until 9 s
    code = sim.connect("code")
    sim.run(1)
    job = sim.status("code").info["pending"]["job"]
    assert job == f"waits for the requests in flight of chat to end (at most {SWAP_DRAIN_S:g} s), then stops it " \
        "(they swap)"
    assert sim.status("chat").status == "available"
    sim.run(8)
    assert long.outcome == "served" and code.outcome == "served"
    assert code.served_at is not None and long.served_at is not None and code.served_at > long.served_at + 6


def test_a_request_that_outlasts_the_drain_is_cut_and_the_swap_goes_on() -> None:
    sim = idle_run()
    endless = sim.connect("chat", duration=SWAP_DRAIN_S * 3)
    sim.run(4)
    code = sim.connect("code")
    sim.run(SWAP_DRAIN_S + 5)
    assert endless.outcome == "cut" and code.outcome == "served"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from([0.0, 0.3, 1.0, 2.5, 4.0, 7.0]),
                          st.sampled_from([0.0, 0.5, 2.0])), min_size=1, max_size=12))
def test_any_traffic_is_served_in_turn_without_two_partners_at_once(
        traffic: list[tuple[str, float, float]]) -> None:
    sim = idle_run()
    connections = []
    for name, pause, duration in traffic:
        connections.append(sim.connect(name, duration))
        sim.run(pause)
    sim.run(60)
    assert [c.outcome for c in connections] == ["served"] * len(connections)  # none refused, reset or cut
    assert all(sim.status(n).status == "idle" for n in NAMES)


def test_a_start_at_its_gate_when_the_group_is_dissolved_goes_on() -> None:
    """The drop-in goes with the group, but a start already at the gate still waits there: Ozwald opens it."""
    sim = idle_run()
    sim.connect("chat")
    sim.run(4)
    code = sim.connect("code")  # waits at its gate for chat to stop
    sim.post(*[i.model_copy(update={"exclusive_with": ()}) for i in instances()])
    sim.run(5)
    assert code.outcome == "served"


def test_each_instance_says_how_long_a_swap_waits_for_its_requests() -> None:
    sim = idle_run({"chat": "4s"})
    long = sim.connect("chat", duration=60)
    sim.run(4)
    code = sim.connect("code")
    sim.run(1)
    assert sim.status("code").info["pending"]["job"] == (
        "waits for the requests in flight of chat to end (at most 4 s), then stops it (they swap)")
    sim.run(8)
    assert long.outcome == "cut" and code.outcome == "served"
    assert code.served_at is not None and long.served_at is not None and code.served_at < long.served_at + 10


def test_a_group_change_reaches_the_gate_in_the_pass_that_starts_the_socket_again() -> None:
    """An instance the pass starts (its socket was down) gets its new gate in that same pass, as one it keeps."""
    sim = idle_run()
    sim.host.enqueue("stop", ["ozwald-chat.socket"])  # down, unseen by the reconciler yet
    sim.host.take_events()
    sim.post(*[i.model_copy(update={"exclusive_with": ()}) for i in instances()])
    assert "ozwald-chat.service.d/50-ozwald-swap.conf" not in sim.host.companions["chat"]
    assert sim.host.files["chat"].swap_gate is None
