# SPDX-License-Identifier: AGPL-3.0-or-later
"""The simulated host is honest: the same scenarios, run by the same core and driver against the simulator
(tests/support/simhost.py) and against real systemd and Podman in the test host, give the same sequence of
statuses for every instance.

The scenario is issue 22's item 1 as an operator met it: `chat` desired under profile `large` and `slow`
desired too (with `broken`, which fails at once); a reload removes `large` and changes `slow`'s environment.
Before, every pass raised from then on, `slow` never restarted and `chat` stayed `available` under a profile
that no longer existed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from ozwald.config import Settings
from ozwald.provisioner.reconciler import Reconciler
from ozwald.records import ActiveService, DesiredInstance
from tests.integration.driver_kit import PYTHON_HEALTH, Drivers, drivers_for, http_json, server
from tests.integration.test_reconciler import Desired, Published
from tests.support.simrun import SimRun
from tests.testhost.harness import TestHost

Check = Callable[[dict[str, ActiveService]], bool]


def settings(*, large: bool = True, slow_model: str = "old") -> Settings:
    profiles: dict[str, Any] = {"small": {"environment": {"MODEL_NAME": "small"}}}
    if large:
        profiles["large"] = {"environment": {"MODEL_NAME": "large"}}
    # SIM tells the simulated host how the container behaves; the test server ignores it.
    return Settings.model_validate({"services": [
        server("chat", ports=["8010:8000"], health=PYTHON_HEALTH, environment={"SIM": "healthy:1"},
               profiles=profiles),
        server("slow", ports=["8011:8000"], health=PYTHON_HEALTH,
               environment={"SIM": "healthy:2", "START_DELAY_S": "2", "MODEL_NAME": slow_model}),
        server("broken", environment={"SIM": "fail", "EXIT_CODE": "4"}),
    ]})


DESIRED = (DesiredInstance(name="chat", service="chat", profile="large"),
           DesiredInstance(name="slow", service="slow"), DesiredInstance(name="broken", service="broken"))


def settled_first(s: dict[str, ActiveService]) -> bool:
    return (len(s) == 3 and s["chat"].status == "available" and s["slow"].status == "available"
            and s["broken"].status == "failed")


def scenario(post: Callable[..., None], reload: Callable[[Settings], None], settle: Callable[[Check], None],
             statuses: Callable[[str], list[str]]) -> dict[str, list[str]]:
    post(*DESIRED)
    settle(settled_first)
    reload(settings(large=False, slow_model="new"))
    settle(lambda s: s["chat"].status == "failed" and s["slow"].status == "available"
           and s["slow"].info.get("generation") is not None and s["slow"].profile is None
           and _model_hash_changed(s["slow"]))
    return {name: statuses(name) for name in ("chat", "slow", "broken")}


_first_hash: dict[str, str] = {}


def _model_hash_changed(slow: ActiveService) -> bool:
    return bool(slow.info.get("spec_hash") != _first_hash.get("slow"))


EXPECTED = {"chat": ["starting", "available", "failed"],
            "slow": ["starting", "available", "starting", "available"],
            "broken": ["starting", "failed"]}


def test_the_simulator_gives_the_expected_sequence() -> None:
    sim = SimRun(settings())

    def settle(check: Check) -> None:
        for _ in range(600):
            if sim.published and check({s.name: s for s in sim.published}):
                if check is settled_first:
                    _first_hash["slow"] = str(sim.status("slow").info.get("spec_hash"))
                return
            sim.run(0.1)
        raise AssertionError(f"did not settle: {sim.published}")

    assert scenario(sim.post, sim.reload, settle, sim.sequence) == EXPECTED
    assert "no profile 'large'" in str(sim.status("chat").info.get("reason"))


@pytest.mark.testhost
def test_the_test_host_gives_the_same_sequence(testhost: TestHost, caplog: pytest.LogCaptureFixture) -> None:
    desired, published = Desired(), Published()
    with drivers_for(testhost) as drivers:
        reconciler = Reconciler(settings(), desired, drivers.systemd, drivers.store, published,
                                podman=drivers.podman, journal_prefix=drivers.journal_prefix, resync_interval=30)
        reconciler.start()
        try:
            def post(*instances: DesiredInstance) -> None:
                desired.set(*instances)
                reconciler.wake(desired.value.generation)

            def settle(check: Check) -> None:
                state = published.wait(check, timeout=120)
                if check is settled_first:
                    _first_hash["slow"] = str(state["slow"].info.get("spec_hash"))

            with caplog.at_level(logging.ERROR, logger="ozwald"):
                seen = scenario(post, reconciler.replace_settings, settle, published.statuses_of)
            assert seen == EXPECTED
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # no pass raised
            assert http_json(drivers.host.url(8011, "/env"))["MODEL_NAME"] == "new"
            chat = published.by_name()["chat"]
            assert "no profile 'large'" in str(chat.info.get("reason"))
            assert not drivers.host.guest_path("/run/containers/systemd/ozwald-chat.container").exists()
            post()
            published.wait(lambda s: not s)
        finally:
            reconciler.stop()
        _cleanup(drivers)


def _cleanup(drivers: Drivers) -> None:
    for name in list(drivers.store.existing()):
        drivers.store.remove(name)
    drivers.systemd.reload()
