# SPDX-License-Identifier: AGPL-3.0-or-later
"""Failure explanations: one reason from systemd's state, Podman's answer and the last log lines."""

from __future__ import annotations

from typing import cast

import pytest

from ozwald.diagnose import explain_failure, image_missing
from ozwald.podman import PodmanInspector, PodmanUnavailable
from ozwald.systemd.protocol import UnitState

S = 1_000_000  # µs


def state(**fields: object) -> UnitState:
    values: dict[str, object] = {"name": "ozwald-x.service", "load_state": "loaded", "active_state": "failed",
                                 "sub_state": "failed"}
    values.update(fields)
    return UnitState(**values)  # type: ignore[arg-type]


class Podman:
    def __init__(self, exists: bool | None) -> None:
        self.exists = exists
        self.asked: list[str] = []

    def image_exists(self, reference: str) -> bool:
        self.asked.append(reference)
        if self.exists is None:
            raise PodmanUnavailable("no socket")
        return self.exists


def inspector(podman: Podman) -> PodmanInspector:
    return cast(PodmanInspector, podman)


RAN_2S = {"exec_main_start_usec": 10 * S, "exec_main_exit_usec": 12 * S}


@pytest.mark.parametrize("unit,kw,expected", [
    (state(load_state="not-found"), {}, "unit ozwald-x.service is not-found: Quadlet did not generate it; check the "
                                        "file with `/usr/libexec/podman/quadlet -dryrun`"),
    (state(load_state="bad-setting"), {}, "unit ozwald-x.service is bad-setting: Quadlet did not generate it; "
                                          "check the file with `/usr/libexec/podman/quadlet -dryrun`"),
    (state(result="exit-code"), {"logs": ["Error: unresolvable CDI devices nvidia.com/gpu=3"]},
     "CDI device nvidia.com/gpu=3 not found: no CDI spec in /etc/cdi or /var/run/cdi provides it (for NVIDIA: "
     "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)"),
    (state(result="timeout", timeout_start_usec=300 * S), {"has_health_check": True, "logs": ["loading"]},
     "never became healthy within the start timeout (300 s): health check failing: loading"),
    (state(result="timeout"), {}, "did not start within the start timeout"),
    (state(result="timeout", timeout_start_usec=90 * S), {}, "did not start within the start timeout (90 s)"),
    (state(result="start-limit-hit", n_restarts=5, exec_main_code=1, exec_main_status=1, **RAN_2S), {},
     "crash loop: systemd gave up (start limit hit) after 5 automatic restarts; last run exited 1 after 2.0 s"),
    (state(result="exit-code", n_restarts=2, exec_main_code=2, exec_main_status=9), {},
     "crash loop: systemd gave up (start limit hit) after 2 automatic restarts; last run killed by SIGKILL"),
    (state(result="oom-kill"), {"logs": ["big alloc"]}, "killed by the out-of-memory killer: big alloc"),
    (state(result="signal", exec_main_code=2, exec_main_status=15, **RAN_2S), {}, "killed by SIGTERM after 2.0 s"),
    (state(result="core-dump", exec_main_code=3, exec_main_status=11), {}, "killed by SIGSEGV"),
    (state(result="signal", exec_main_code=2, exec_main_status=99), {}, "killed by signal 99"),
    (state(result="exit-code", exec_main_code=1, exec_main_status=3),
     {"logs": ["one", " ", "two", "three", "four", ""]}, "exited 3: two | three | four"),
    (state(result="watchdog"), {}, "watchdog timeout"),
    (state(result="resources"), {}, "systemd could not set up the unit's resources"),
    (state(result="protocol"), {}, "failed (protocol)"),
    (state(result=""), {}, "failed (unknown result)"),
    (state(active_state="inactive", sub_state="dead"), {}, "inactive (dead)"),
])
def test_explanations(unit: UnitState, kw: dict[str, object], expected: str) -> None:
    assert explain_failure(unit, **kw) == expected  # type: ignore[arg-type]


def test_a_missing_image_comes_first_and_podman_decides() -> None:
    failed = state(result="exit-code", exec_main_code=1, exec_main_status=125)
    podman = Podman(exists=False)
    assert explain_failure(failed, image="localhost/x:latest", podman=inspector(podman)) == \
        "image localhost/x:latest not found"
    assert podman.asked == ["localhost/x:latest"]
    present = Podman(exists=True)
    logs = ["Error: initializing source docker://x: manifest unknown"]
    assert explain_failure(failed, image="x", podman=inspector(present), logs=logs).startswith("exited 125")


@pytest.mark.parametrize("logs,missing", [
    (["Error: localhost/x: image not known"], True),
    (["Trying to pull docker.io/x... manifest unknown"], True),
    (["Error: short-name resolution enforced"], True),
    (["all good", "Traceback: boom"], False),
])
def test_without_podman_the_logs_tell_a_missing_image(logs: list[str], missing: bool) -> None:
    assert image_missing("x", logs, None) is missing
    assert image_missing("x", logs, inspector(Podman(exists=None))) is missing  # socket down: the logs decide
    assert image_missing(None, logs, None) is False
