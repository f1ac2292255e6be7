# SPDX-License-Identifier: AGPL-3.0-or-later
import pytest
from jeepney import HeaderFields

from ozwald.diagnose import explain_failure
from ozwald.systemd import protocol
from ozwald.systemd.errors import AccessDenied, SystemdError, UnitNotFound, error_for


def test_unit_object_path_escapes_like_systemd() -> None:
    assert protocol.unit_object_path("ozwald-qwen1.5-vllm.service") == \
        "/org/freedesktop/systemd1/unit/ozwald_2dqwen1_2e5_2dvllm_2eservice"
    assert protocol.unit_object_path("a_b.service") == "/org/freedesktop/systemd1/unit/a_5fb_2eservice"


@pytest.mark.parametrize("unit", ["ozwald-qwen1.5-vllm.service", "a_b.service", "ozwald-é@x\\y.service", "-.mount"])
def test_unit_name_from_path_inverts_the_escaping(unit: str) -> None:
    assert protocol.unit_name_from_path(protocol.unit_object_path(unit)) == unit


@pytest.mark.parametrize("path", ["/org/freedesktop/systemd1", "/org/freedesktop/systemd1/job/12",
                                  "/org/freedesktop/systemd1/unit/bad_zz", "/org/freedesktop/systemd1/unit/x_2",
                                  "/org/freedesktop/systemd1/unit/_ff_fe"])
def test_unit_name_from_path_refuses_other_paths(path: str) -> None:
    assert protocol.unit_name_from_path(path) is None


def test_messages_carry_the_unit_and_mode() -> None:
    message = protocol.start_unit("ozwald-a.service")
    assert message.header.fields[HeaderFields.member] == "StartUnit"
    assert message.body == ("ozwald-a.service", "replace")
    assert protocol.list_units_by_patterns(["ozwald-*"]).body == ([], ["ozwald-*"])


def test_dbus_errors_become_typed_exceptions() -> None:
    assert isinstance(error_for("u", "org.freedesktop.systemd1.NoSuchUnit", "Unit u not found."), UnitNotFound)
    assert isinstance(error_for("u", "org.freedesktop.DBus.Error.AccessDenied", "denied"), AccessDenied)
    other = error_for("u", "org.freedesktop.systemd1.TransactionIsDestructive", "nope")
    assert type(other) is SystemdError
    assert str(other) == "u: nope (org.freedesktop.systemd1.TransactionIsDestructive)"


def test_unit_state_from_properties() -> None:
    unit = {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed", "Job": (0, "/"),
            "InvocationID": bytes.fromhex("00ff"), "StateChangeTimestamp": 5}
    service = {"Result": "exit-code", "NRestarts": 2, "ExecMainCode": 1, "ExecMainStatus": 3,
               "ExecMainStartTimestamp": 1_000_000, "ExecMainExitTimestamp": 3_100_000}
    state = protocol.unit_state("ozwald-a.service", unit, service)
    assert state.failed and state.result == "exit-code" and state.n_restarts == 2
    assert state.invocation_id == "00ff"
    assert state.main_ran_seconds == 2.1
    assert explain_failure(state, logs=["booting", "fatal: no model", ""]) == (
        "crash loop: systemd gave up (start limit hit) after 2 automatic restarts; last run exited 3 after 2.1 s: "
        "booting | fatal: no model")
    once = protocol.unit_state("ozwald-a.service", unit, {**service, "NRestarts": 0})
    assert explain_failure(once, logs=["a", "b", "c", "d"]) == "exited 3 after 2.1 s: b | c | d"


def test_explanations_for_each_result() -> None:
    base = {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed"}
    timeout = protocol.unit_state("u", base, {"Result": "timeout", "TimeoutStartUSec": 5_000_000})
    assert explain_failure(timeout, has_health_check=True) == \
        "never became healthy within the start timeout (5 s): health check failing"
    limit = protocol.unit_state("u", base, {"Result": "start-limit-hit", "NRestarts": 5, "ExecMainCode": 1,
                                            "ExecMainStatus": 1})
    assert explain_failure(limit).startswith(
        "crash loop: systemd gave up (start limit hit) after 5 automatic restarts; last run exited 1")
    killed = protocol.unit_state("u", base, {"Result": "signal", "ExecMainCode": 2, "ExecMainStatus": 9})
    assert explain_failure(killed) == "killed by SIGKILL"
    missing = protocol.unit_state("u", base, {"Result": "exit-code", "ExecMainCode": 1, "ExecMainStatus": 125})
    assert explain_failure(missing, image="localhost/x:latest",
                           logs=["Error: localhost/x:latest: image not known"]) == "image localhost/x:latest not found"
    not_found = protocol.unit_state("u", {"LoadState": "not-found", "ActiveState": "inactive"}, {})
    assert "is not-found: Quadlet did not generate it" in explain_failure(not_found)
