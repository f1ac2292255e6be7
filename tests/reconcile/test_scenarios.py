# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reconciler scenarios on the simulated host: the real core and driver, systemd and Podman simulated, the
truth rules checked at every change (tests/support/simrun.py). The same scenarios run in the test host in
tests/integration/test_sim_agrees.py, which checks that both give the same statuses."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ozwald.config import Settings
from ozwald.records import DesiredInstance
from tests.support.simrun import SimRun


def settings(**overrides: Any) -> Settings:
    services: list[dict[str, Any]] = [
        {"name": "chat", "image": "localhost/x:latest", "min_uptime": "1s", "environment": {"SIM": "healthy:1"},
         "profiles": {"small": {"environment": {"N": "1"}}, "large": {"environment": {"N": "2"}}}},
        {"name": "slow", "image": "localhost/x:latest", "min_uptime": "1s", "environment": {"SIM": "healthy:3"}},
        {"name": "broken", "image": "localhost/x:latest", "environment": {"SIM": "fail"}},
    ]
    for service in services:
        service.update(overrides.get(service["name"], {}))
    return Settings.model_validate({"services": services})


def chat(profile: str = "small") -> DesiredInstance:
    return DesiredInstance(name="chat", service="chat", profile=profile)


SLOW = DesiredInstance(name="slow", service="slow")


def test_start_change_and_remove() -> None:
    sim = SimRun(settings())
    sim.post(chat("small"))
    sim.run(10)
    assert sim.status("chat").status == "available"
    sim.post(chat("large"))
    sim.run(10)
    assert sim.status("chat").profile == "large" and sim.status("chat").status == "available"
    assert sim.sequence("chat") == ["starting", "available", "starting", "available"]
    sim.post()
    sim.run(10)
    assert sim.published == [] and sim.host.files == {} and sim.host.units == {}


def test_a_reload_that_drops_a_desired_profile_fails_that_instance_only(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 22, item 1: `chat` desired under profile `large`, `slow` desired too; the settings lose `large`
    and change `slow`'s environment. Before, every pass raised, `slow` never restarted and `chat` stayed
    `available` under a profile that no longer exists."""
    sim = SimRun(settings())
    sim.post(chat("large"), SLOW)
    sim.run(15)
    assert {s.name: s.status for s in sim.published} == {"chat": "available", "slow": "available"}
    old_slow = sim.status("slow").info["spec_hash"]
    edited = settings(chat={"profiles": {"small": {"environment": {"N": "1"}}}},
                      slow={"environment": {"SIM": "healthy:3", "MODEL": "new"}})
    with caplog.at_level(logging.ERROR):
        sim.reload(edited)
        sim.run(20)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    failed = sim.status("chat")
    assert failed.status == "failed" and failed.profile == "large"
    assert "no profile 'large'" in failed.info["reason"], failed.info
    assert not sim.host.running("chat") and "chat" not in sim.host.files
    slow = sim.status("slow")
    assert slow.status == "available" and slow.info["spec_hash"] != old_slow
    # The operator puts the profile back: the instance converges without a new desired set.
    sim.reload(settings())
    sim.run(20)
    assert sim.status("chat").status == "available"


def test_a_container_that_fails_at_once_is_failed_with_its_exit_and_held() -> None:
    sim = SimRun(settings())
    sim.post(DesiredInstance(name="broken", service="broken"))
    sim.run(60)
    broken = sim.status("broken")
    assert broken.status == "failed" and broken.info["reason"].startswith("crash loop"), broken.info
    starts = sim.host.units["ozwald-broken.service"].starts
    sim.run(400)  # systemd gave up; Ozwald holds it failed until the desired set is posted again
    assert sim.host.units["ozwald-broken.service"].starts == starts
    sim.post(DesiredInstance(name="broken", service="broken"))
    sim.run(1)
    assert sim.status("broken").status == "starting"


def test_a_crash_restarts_and_the_provisioner_adopts_after_kill() -> None:
    sim = SimRun(settings())
    sim.post(chat(), SLOW)
    sim.run(10)
    sim.host.crash("ozwald-chat.service")
    sim.run(0.01)
    assert sim.status("chat").status == "starting"
    sim.run(2.1)  # RestartSec=2: systemd counts the restart when it makes it
    assert sim.status("chat").info.get("restarting") and "1 restart so far" in sim.status("chat").info["reason"]
    sim.run(10)
    assert sim.status("chat").status == "available" and sim.status("chat").info["restarts"] == 1
    invocations = {u.name: u.invocation for u in sim.host.units.values()}
    sim.restart_provisioner()
    sim.run(5)
    assert {s.name: s.status for s in sim.published} == {"chat": "available", "slow": "available"}
    assert {u.name: u.invocation for u in sim.host.units.values()} == invocations  # nothing restarted


def test_an_unreadable_secret_file_fails_the_instance_and_names_the_file(tmp_path: Any) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    with_secret = settings(slow={"environment": {"SIM": "healthy:1", "HF_TOKEN": {"file": str(secret)}}})
    sim = SimRun(with_secret)
    sim.post(chat(), SLOW)
    sim.run(10)
    assert sim.status("slow").status == "available"
    secret.unlink()
    sim.reload(with_secret)
    sim.run(10)
    assert sim.status("slow").status == "failed" and str(secret) in sim.status("slow").info["reason"]
    assert "s3cret" not in repr(sim.published)
    assert sim.status("chat").status == "available"
