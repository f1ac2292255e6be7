# SPDX-License-Identifier: AGPL-3.0-or-later
"""On-demand instances on the simulated host (issue 18): the real core and driver, systemd's socket, proxy and
StopWhenUnneeded simulated, the truth rules checked at every change (`idle` only while the socket listens and
no container runs, `available` only while the container is ready)."""

from __future__ import annotations

from typing import Any

from ozwald.config import Settings
from ozwald.records import DesiredInstance
from tests.support.simrun import SimRun

IDLE_S = 5.0
CHAT = DesiredInstance(name="chat", service="chat")
PLAIN = DesiredInstance(name="plain", service="plain")


def settings(**chat: Any) -> Settings:
    service: dict[str, Any] = {"name": "chat", "image": "localhost/x:latest", "ports": ["8090:8000"],
                               "environment": {"SIM": "healthy:3"}, "health": {"command": ["true"]},
                               "on_demand": {"idle_stop": f"{IDLE_S}s"}}
    service.update(chat)
    plain = {"name": "plain", "image": "localhost/x:latest", "min_uptime": "1s", "environment": {"SIM": "healthy:1"}}
    return Settings.model_validate({"services": [service, plain]})


def idle_run(**chat: Any) -> SimRun:
    sim = SimRun(settings(**chat))
    sim.post(CHAT, PLAIN)
    sim.run(3)
    assert sim.status("chat").status == "idle"
    assert sim.status("plain").status == "available"
    return sim


def test_desired_on_demand_listens_without_a_container() -> None:
    sim = idle_run()
    assert not sim.host.running("chat") and sim.host.listening("chat")
    info = sim.status("chat").info
    assert info.on_demand is not None and info.on_demand.socket == "ozwald-chat.socket"
    assert (info.on_demand.listen, info.on_demand.idle_stop, info.on_demand.socket_state) == (
        "8090", IDLE_S, "active/listening")
    assert "next connection starts the container" in info["reason"]


def test_a_connection_to_an_idle_instance_is_served_and_it_goes_idle_again() -> None:
    sim = idle_run()
    connection = sim.connect("chat")
    assert sim.status("chat").status == "starting" and connection.outcome == "pending"
    sim.run(3.5)
    assert connection.outcome == "served" and sim.status("chat").status == "available"
    sim.run(IDLE_S + 1)
    assert sim.status("chat").status == "idle" and not sim.host.running("chat")
    assert sim.sequence("chat") == ["starting", "idle", "starting", "available", "stopping", "idle"]
    assert sim.sequence("plain") == ["starting", "available"]


def test_a_connection_during_the_idle_stop_is_held_and_served_by_the_next_start() -> None:
    sim = idle_run()
    sim.connect("chat")
    sim.run(3.5)
    while sim.host.units["ozwald-chat.service"].active_state != "deactivating":  # the proxy exits for idleness
        sim.run(0.05)
    assert sim.status("chat").status == "stopping"
    late = sim.connect("chat")
    sim.run(5)
    assert late.outcome == "served"
    assert sim.sequence("chat")[-3:] == ["stopping", "starting", "available"]


def test_many_cycles_in_a_few_minutes_never_hit_the_start_limit() -> None:
    """Every start on demand is a start of the container's unit; five in five minutes used to exhaust its
    StartLimitBurst. A start that became ready clears the counter (the proxy's ExecStartPost, once the container
    is active): without it the sixth start hits the start limit."""
    sim = idle_run()
    connections = []
    for _ in range(12):
        connections.append(sim.connect("chat"))
        sim.run(3.5 + IDLE_S + 1)
        assert sim.status("chat").status == "idle"
    assert [c.outcome for c in connections] == ["served"] * 12
    assert sim.host.now < 300
    assert "failed" not in sim.sequence("chat")


def test_a_start_that_fails_is_failed_with_the_reason_and_the_next_connection_tries_again() -> None:
    sim = idle_run(environment={"SIM": "fail"})
    first = sim.connect("chat")
    sim.run(2)
    assert first.outcome == "reset"
    failed = sim.status("chat")
    assert failed.status == "failed" and failed.info["reason"]
    assert sim.host.listening("chat")  # the socket keeps listening: the next connection is a retry
    second = sim.connect("chat")
    assert sim.status("chat").status == "starting"
    sim.run(2)
    assert second.outcome == "reset" and sim.status("chat").status == "failed"


def test_wake_warms_it_and_sleep_frees_it_at_once() -> None:
    sim = idle_run()
    sim.nudge("chat", "wake")
    sim.run(0.1)
    assert sim.status("chat").status == "starting"
    sim.run(3.5)
    assert sim.status("chat").status == "available"
    served = sim.connect("chat")
    assert served.outcome == "served"
    sim.nudge("chat", "sleep")
    sim.run(1)
    assert sim.status("chat").status == "idle" and not sim.host.running("chat") and sim.host.listening("chat")
    sim.nudge("chat", "wake")
    sim.run(3.5 + IDLE_S + 1)  # woken and never used: it idles out like after a connection
    assert sim.sequence("chat")[-4:] == ["starting", "available", "stopping", "idle"]


def test_wake_and_sleep_leave_other_instances_alone() -> None:
    sim = idle_run()
    sim.nudge("plain", "sleep")
    sim.nudge("nobody", "wake")
    sim.run(2)
    assert sim.status("plain").status == "available" and sim.status("chat").status == "idle"


def test_a_change_restarts_the_socket_and_the_next_connection_runs_the_new_spec() -> None:
    sim = idle_run()
    sim.connect("chat")
    sim.run(3.5)
    old = sim.status("chat").info["spec_hash"]
    sim.reload(settings(environment={"SIM": "healthy:3", "N": "2"}))
    sim.run(1)
    assert sim.status("chat").status == "idle" and sim.status("chat").info["spec_hash"] != old
    connection = sim.connect("chat")
    sim.run(3.5)
    assert connection.outcome == "served" and sim.status("chat").status == "available"  # truth checks the spec


def test_a_change_while_a_connection_waits_for_the_old_spec_ends() -> None:
    """The connection would start the old spec again each time its container stopped for the change (a
    livelock); the change stops the socket too, so the waiting connection is reset, and the next is served by
    the new spec."""
    sim = idle_run()
    waiting = sim.connect("chat")
    sim.reload(settings(environment={"SIM": "healthy:3", "N": "2"}))
    sim.run(2)
    assert waiting.outcome == "reset" and sim.status("chat").status == "idle"
    after = sim.connect("chat")
    sim.run(3.5)
    assert after.outcome == "served" and sim.status("chat").status == "available"  # truth checks the spec


def test_turning_on_demand_on_and_off_moves_the_port_between_container_and_socket() -> None:
    sim = SimRun(settings(on_demand=None))
    sim.post(CHAT)
    sim.run(5)
    assert sim.status("chat").status == "available" and not sim.host.listening("chat")
    sim.reload(settings())
    sim.run(3)
    assert sim.status("chat").status == "idle" and not sim.host.running("chat")
    sim.reload(settings(on_demand=False))
    sim.run(5)
    assert sim.status("chat").status == "available" and not sim.host.listening("chat")
    assert sim.status("chat").info.get("on_demand") is None
    assert set(sim.host.units) == {"ozwald-chat.service"}


def test_a_socket_that_goes_down_while_desired_listens_again() -> None:
    sim = idle_run()
    sim.host.enqueue("stop", ["ozwald-chat.socket"])  # an operator's systemctl stop
    sim.run(0.1)
    assert sim.status("chat").status == "failed"
    assert "connections are refused" in sim.status("chat").info["reason"]
    sim.run(3)
    assert sim.status("chat").status == "idle" and sim.host.listening("chat")


def test_removing_it_stops_and_removes_every_unit() -> None:
    sim = idle_run()
    sim.connect("chat")
    sim.run(4)
    sim.post(PLAIN)
    sim.run(3)
    assert [s.name for s in sim.published] == ["plain"]
    assert set(sim.host.units) == {"ozwald-plain.service"} and "chat" not in sim.host.companions


def test_a_new_provisioner_adopts_an_on_demand_instance_as_it_is() -> None:
    sim = idle_run()
    sim.connect("chat")
    sim.run(4)
    starts = len(sim.host.units["ozwald-chat.service"].starts)
    sim.restart_provisioner()
    sim.run(1)
    assert sim.status("chat").status == "available"
    assert len(sim.host.units["ozwald-chat.service"].starts) == starts  # adopted, not restarted
    sim.run(IDLE_S + 1)
    assert sim.status("chat").status == "idle"


def test_a_socket_that_cannot_bind_is_failed_and_a_wake_does_not_knock_on_the_holder() -> None:
    """Two on-demand instances of one service share its port: the second socket fails (address in use); a
    wake of it must not connect to the port, which would start the first one's container."""
    sim = idle_run()
    sim.post(CHAT, PLAIN, DesiredInstance(name="twin", service="chat"))
    sim.run(3)
    twin = sim.status("twin")
    assert twin.status == "failed" and "ozwald-twin.socket is failed (resources)" in twin.info["reason"]
    sim.nudge("twin", "wake")
    sim.run(0.5)
    assert not sim.host.running("chat") and sim.status("chat").status == "idle"


def test_the_profiling_queue_runs_an_on_demand_service_like_any_other() -> None:
    """Profiled, its container starts at once and publishes the public port itself: no socket, no proxy."""
    sim = SimRun(settings())
    sim.post(CHAT.model_copy(update={"name": "profile-chat", "profiled": True}))
    sim.run(4)
    assert sim.status("profile-chat").status == "available" and sim.host.running("profile-chat")
    assert not sim.host.listening("profile-chat") and "ozwald-profile-chat.socket" not in sim.host.units
    assert "PublishPort=8090:8000" in sim.host.files["profile-chat"].text


def test_a_crash_loop_of_the_old_spec_does_not_refuse_the_first_start_on_demand() -> None:
    """`plain` crash-looped until systemd gave up; then it is posted on demand while the provisioner is down,
    and a new process applies the change: the first connection is served (found by a random run)."""
    def with_plain(**plain: Any) -> Settings:
        services = settings().model_dump(mode="json", exclude_defaults=True)["services"]
        return Settings.model_validate({"services": [s | plain if s["name"] == "plain" else s for s in services]})

    sim = SimRun(with_plain(environment={"SIM": "fail"}, restart="on-failure"))
    sim.post(PLAIN)
    sim.run(15)
    assert sim.host.units["ozwald-plain.service"].result == "start-limit-hit"
    sim.desired_unreadable = True
    sim.reload(with_plain(ports=["8091:8000"], on_demand={"idle_stop": f"{IDLE_S}s"}))
    sim.restart_provisioner()
    sim.desired_unreadable = False
    sim.run(5)
    assert sim.status("plain").status == "idle"
    served = sim.connect("plain")
    sim.run(5)
    assert served.outcome == "served" and sim.status("plain").status == "available"


def test_a_wake_never_publishes_news_it_has_not_read() -> None:
    """`plain` crashes, unheard yet, as a wake of `chat` arrives: the wake's publishes come after a read, so
    `plain` is never said available while down (found by a random run, on an always-on instance)."""
    sim = idle_run()
    sim.host.crash("ozwald-plain.service")
    sim.nudge("chat", "wake")
    assert sim.status("plain").status != "available"
    sim.run(1)
    sim.host.crash("ozwald-plain.service")
    sim.nudge("chat", "sleep")
    assert sim.status("plain").status != "available"
