# SPDX-License-Identifier: AGPL-3.0-or-later
"""The plan and the hold on failed instances, without a host: desired vs unit files and unit states."""

from __future__ import annotations

from pathlib import Path

from ozwald.config import Settings
from ozwald.provisioner.plan import Target, hold_failed, plan, stale, started_from
from ozwald.provisioner.requests import effective_spec
from ozwald.quadlet import render_unit
from ozwald.quadlet.stored import StoredUnit
from ozwald.records import DesiredInstance
from ozwald.systemd.protocol import UnitState

SETTINGS = Settings.model_validate({"services": [
    {"name": "m", "image": "localhost/x:latest", "profiles": {"small": {"environment": {"N": "1"}},
                                                              "large": {"environment": {"N": "2"}}}},
]})


def target(profile: str) -> Target:
    instance = DesiredInstance(name="m", service="m", profile=profile)
    unit = render_unit(effective_spec(SETTINGS, instance), "m")
    return Target(instance, unit.spec_hash, unit.text)


def stored(tmp_path: Path, profile: str, written_usec: int) -> StoredUnit:
    text = target(profile).text or ""
    path = tmp_path / "ozwald-m.container"
    return StoredUnit("m", path, False, text, written_usec)


def state(active: str, started_usec: int = 0) -> UnitState:
    return UnitState(name="ozwald-m.service", load_state="loaded", active_state=active, sub_state="x",
                     exec_main_start_usec=started_usec)


def test_each_action_has_a_cause(tmp_path: Path) -> None:
    small = stored(tmp_path, "small", 1_000_000)
    cases = [
        ({}, {}, "start", "new"),
        ({"m": small}, {"ozwald-m.service": state("active", 2_000_000)}, "keep", "unchanged"),
        ({"m": small}, {"ozwald-m.service": state("failed")}, "start", "ended"),
    ]
    for files, states, action, cause in cases:
        [entry] = plan(SETTINGS, [target("small")], files, states)
        assert (entry.action, entry.cause) == (action, cause), entry
    [entry] = plan(SETTINGS, [target("large")], {"m": small}, {"ozwald-m.service": state("active", 2_000_000)})
    assert (entry.action, entry.cause) == ("restart", "changed")
    assert entry.reason == "restart: profile small → large changes N"
    [gone] = plan(SETTINGS, [], {"m": small}, {})
    assert (gone.action, gone.cause) == ("stop", "removed")
    assert "cause" not in gone.model_dump(mode="json")  # an internal value, not part of the API


def test_a_container_older_than_its_unit_file_is_restarted(tmp_path: Path) -> None:
    """A provisioner killed between writing the new file and restarting: the file matches, what runs does not."""
    large = stored(tmp_path, "large", 5_000_000)
    running_old = state("active", started_usec=2_000_000)
    assert not started_from(large, running_old)
    states = {"ozwald-m.service": running_old}
    assert stale({"m": large}, states) == {"m"}
    [entry] = plan(SETTINGS, [target("large")], {"m": large}, states, stale({"m": large}, states))
    assert (entry.action, entry.cause) == ("restart", "stale")
    assert stale({"m": large}, {"ozwald-m.service": state("active", started_usec=6_000_000)}) == set()


def test_a_unit_file_rendered_differently_restarts_even_with_the_same_hash(tmp_path: Path) -> None:
    small = stored(tmp_path, "small", 1_000_000)
    edited = StoredUnit("m", small.path, False, small.text.replace("RestartSec=2", "RestartSec=3"), 1_000_000)
    [entry] = plan(SETTINGS, [target("small")], {"m": edited}, {"ozwald-m.service": state("active", 2_000_000)})
    assert (entry.action, entry.cause) == ("restart", "changed")


def test_a_failed_instance_is_held_until_a_new_generation(tmp_path: Path) -> None:
    small = stored(tmp_path, "small", 1_000_000)
    failed = UnitState(name="ozwald-m.service", load_state="loaded", active_state="failed", sub_state="failed",
                       exec_main_start_usec=2_000_000)
    [entry] = plan(SETTINGS, [target("small")], {"m": small}, {"ozwald-m.service": failed})
    held = hold_failed(entry, failed, new_generation=False)
    assert (held.action, held.cause, held.reason) == ("keep", "held", "keep: failed; post the desired set to retry")
    assert hold_failed(entry, failed, new_generation=True) == entry
    never_ran = UnitState(name="ozwald-m.service", load_state="loaded", active_state="inactive", sub_state="dead")
    [entry] = plan(SETTINGS, [target("small")], {"m": small}, {"ozwald-m.service": never_ran})
    assert hold_failed(entry, never_ran, new_generation=False).action == "start"  # written, never started
