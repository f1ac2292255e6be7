# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's systemd and Podman drivers against real systemd, D-Bus, Podman and Quadlet in a test host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ozwald.config import Settings, resolve
from ozwald.quadlet import RenderedUnit, render_unit
from ozwald.systemd import JobFailed
from tests.integration.driver_kit import (
    PYTHON_HEALTH,
    Drivers,
    drivers_for,
    http_json,
    server,
    settings_for,
)
from tests.quadlet.cases import ADVERSARIAL_ENV
from tests.testhost.harness import TestHost

CDI_SPEC = """\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/nvidia0
          hostPath: /dev/null
      env:
        - OZWALD_TEST_GPU=0
"""


@pytest.fixture(scope="module")
def drivers(testhost: TestHost) -> Iterator[Drivers]:
    with drivers_for(testhost) as kit:
        yield kit


def test_render_write_reload_start_healthy_then_stop(drivers: Drivers) -> None:
    settings = settings_for(server("happy", ports=["8000:8000"], health=PYTHON_HEALTH,
                                   environment={"MODEL_NAME": "qwen-standin"}))
    unit = drivers.install(settings, "happy")
    outcome = drivers.systemd.start_unit(unit.unit_name, timeout=60)
    assert outcome.ok
    state = drivers.systemd.unit_state(unit.unit_name)
    assert (state.active_state, state.sub_state) == ("active", "running")
    container = drivers.podman.container("ozwald-happy")
    assert container is not None and container.health == "healthy"  # Notify=healthy: active means healthy
    assert container.labels["ozwald.spec-hash"] == unit.spec_hash
    assert [c.name for c in drivers.podman.containers()] == ["ozwald-happy"]
    models = http_json(drivers.host.url(8000, "/v1/models"))
    assert models["data"][0]["id"] == "qwen-standin"
    completion = http_json(drivers.host.url(8000, "/v1/completions"), {"model": "x", "prompt": "hello ozwald"})
    assert completion["choices"][0]["text"] == "hello ozwald"

    drivers.systemd.stop_unit(unit.unit_name, timeout=60)
    assert drivers.systemd.unit_state(unit.unit_name).active_state == "inactive"
    assert drivers.podman.container("ozwald-happy") is None
    assert [c.name for c in drivers.podman.containers()] == []
    drivers.remove("happy")
    assert drivers.systemd.unit_state(unit.unit_name).load_state == "not-found"


def test_missing_image_is_reported_as_such(drivers: Drivers) -> None:
    settings = settings_for(server("noimage", image="localhost/ozwald-does-not-exist:latest"))
    unit = drivers.install(settings, "noimage")
    with pytest.raises(JobFailed) as info:
        drivers.systemd.start_unit(unit.unit_name, timeout=60)
    assert info.value.result == "failed"
    assert drivers.systemd.unit_state(unit.unit_name).failed
    assert drivers.explain(settings, unit) == "image localhost/ozwald-does-not-exist:latest not found"
    drivers.systemd.reset_failed(unit.unit_name)
    drivers.remove("noimage")


def test_immediate_exit_reports_code_time_and_logs(drivers: Drivers) -> None:
    settings = settings_for(server("exits", environment={"EXIT_CODE": "3"}))
    unit = drivers.install(settings, "exits")
    drivers.systemd.start([unit.unit_name], timeout=60)
    state = drivers.systemd.wait_for(unit.unit_name, lambda s: s.active_state in ("failed", "inactive"), 60)
    assert state.failed and state.result == "exit-code" and state.exec_main_status == 3
    reason = drivers.explain(settings, unit)
    assert reason.startswith("exited 3 after ")
    assert "EXIT_CODE=3, exiting at once" in reason
    drivers.systemd.reset_failed(unit.unit_name)
    drivers.remove("exits")


def test_crash_loop_ends_failed_when_restart_gives_up(drivers: Drivers) -> None:
    settings = settings_for(server("loops", environment={"CRASH_AFTER_S": "0.2"}, restart="on-failure",
                                   restart_delay="100ms"))
    unit = drivers.install(settings, "loops")
    drivers.systemd.start([unit.unit_name], timeout=60)
    state = drivers.systemd.wait_for(unit.unit_name, lambda s: s.failed, 90)
    assert state.n_restarts == 5  # StartLimitBurst: the sixth failure ends it
    reason = drivers.explain(settings, unit)
    assert reason.startswith(
        "crash loop: systemd gave up (start limit hit) after 5 automatic restarts; last run exited 1 after ")
    drivers.systemd.reset_failed(unit.unit_name)
    drivers.remove("loops")


def test_never_healthy_times_out_at_the_configured_start_timeout(drivers: Drivers) -> None:
    settings = settings_for(server("sulks", environment={"NEVER_HEALTHY": "1"}, health=PYTHON_HEALTH,
                                   start_timeout="4s"))
    unit = drivers.install(settings, "sulks")
    outcome = drivers.systemd.start([unit.unit_name], timeout=60)[unit.unit_name]
    assert outcome.result != "done"
    assert 3.5 <= outcome.seconds < 30
    state = drivers.systemd.unit_state(unit.unit_name)
    assert state.failed and state.result == "timeout"
    assert drivers.explain(settings, unit).startswith(
        "never became healthy within the start timeout (4 s): health check failing")
    drivers.systemd.reset_failed(unit.unit_name)
    drivers.remove("sulks")


def test_cdi_device_reaches_the_container(drivers: Drivers) -> None:
    drivers.host.write_file("/etc/cdi/test-nvidia.yaml", CDI_SPEC)
    settings = settings_for(server("gpu", ports=["8001:8000"], health=PYTHON_HEALTH,
                                   devices=["nvidia.com/gpu=0"]))
    unit = drivers.install(settings, "gpu")
    assert "AddDevice=nvidia.com/gpu=0\n" in unit.text
    drivers.systemd.start_unit(unit.unit_name, timeout=60)
    env = http_json(drivers.host.url(8001, "/env"))
    assert env["OZWALD_TEST_GPU"] == "0"
    probe = drivers.host.exec(["podman", "exec", "ozwald-gpu", "python3", "-c",
                               "import os, stat; print(stat.S_ISCHR(os.stat('/dev/nvidia0').st_mode))"])
    assert probe.stdout.strip() == "True", probe.stderr
    drivers.systemd.stop_unit(unit.unit_name, timeout=60)
    drivers.remove("gpu")


def test_missing_cdi_spec_is_a_clear_error(drivers: Drivers) -> None:
    settings = settings_for(server("nogpu", devices=["nvidia.com/gpu=7"]))
    unit = drivers.install(settings, "nogpu")
    with pytest.raises(JobFailed):
        drivers.systemd.start_unit(unit.unit_name, timeout=60)
    reason = drivers.explain(settings, unit)
    assert reason.startswith("CDI device nvidia.com/gpu=7 not found: no CDI spec")
    assert "nvidia-ctk cdi generate" in reason
    drivers.systemd.reset_failed(unit.unit_name)
    drivers.remove("nogpu")


def test_adversarial_env_values_reach_the_container_byte_for_byte(drivers: Drivers) -> None:
    settings = settings_for(server("weird", ports=["8002:8000"], health=PYTHON_HEALTH, environment=ADVERSARIAL_ENV,
                                   labels={"note": "a\nb %n $X"}))
    unit = drivers.install(settings, "weird")
    drivers.systemd.start_unit(unit.unit_name, timeout=60)
    env = http_json(drivers.host.url(8002, "/env"))
    assert {key: env.get(key) for key in ADVERSARIAL_ENV} == ADVERSARIAL_ENV
    container = drivers.podman.container("ozwald-weird")
    assert container is not None and container.labels["note"] == "a\nb %n $X"
    drivers.systemd.stop_unit(unit.unit_name, timeout=60)
    drivers.remove("weird")


def test_parallel_start_of_several_units(drivers: Drivers) -> None:
    names = [f"par{i}" for i in range(4)]
    settings = settings_for(*[server(n, health=PYTHON_HEALTH) for n in names])
    units = [drivers.store.write(_render(settings, n), persistent=False) for n in names]
    assert all(units)
    drivers.systemd.reload()
    outcomes = drivers.systemd.start([f"ozwald-{n}.service" for n in names], timeout=90)
    assert {u: o.result for u, o in outcomes.items()} == {f"ozwald-{n}.service": "done" for n in names}
    assert sorted(c.name for c in drivers.podman.containers()) == [f"ozwald-{n}" for n in names]
    drivers.systemd.stop([f"ozwald-{n}.service" for n in names], timeout=90)
    drivers.remove(*names)
    assert drivers.podman.containers() == []


def _render(settings: Settings, name: str) -> RenderedUnit:
    return render_unit(resolve(settings, name), name)
