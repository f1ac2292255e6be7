# SPDX-License-Identifier: AGPL-3.0-or-later
"""systemd's D-Bus API as messages and records, with no I/O (the jeepney way).

Everything here builds jeepney messages or turns reply bodies into typed records, so it can be
tested without a bus; `client.py` is the thin adapter that sends them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, Message, new_method_call

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
ALL_IFACES = ""  # GetAll with an empty interface name: the properties of every interface of the object
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"

MANAGER = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD, interface=MANAGER_IFACE)

JOB_MODE_REPLACE = "replace"


def unit_object_path(unit: str) -> str:
    """systemd's object path for a unit name: every byte outside [A-Za-z0-9] becomes _xx."""
    out = []
    for byte in unit.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and char.isalnum():
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return UNIT_PATH_PREFIX + "".join(out)


def unit_name_from_path(path: str) -> str | None:
    """The unit an object path names (the inverse of unit_object_path); None for any other path."""
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    label = path[len(UNIT_PATH_PREFIX):]
    out = bytearray()
    index = 0
    while index < len(label):
        if label[index] == "_":
            digits = label[index + 1:index + 3]
            if len(digits) != 2 or digits.strip("0123456789abcdef"):
                return None
            out.append(int(digits, 16))
            index += 3
        else:
            out.append(ord(label[index]))
            index += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def subscribe() -> Message:
    return new_method_call(MANAGER, "Subscribe")


def reload() -> Message:
    return new_method_call(MANAGER, "Reload")


def start_unit(unit: str, mode: str = JOB_MODE_REPLACE) -> Message:
    return new_method_call(MANAGER, "StartUnit", "ss", (unit, mode))


def stop_unit(unit: str, mode: str = JOB_MODE_REPLACE) -> Message:
    return new_method_call(MANAGER, "StopUnit", "ss", (unit, mode))


def restart_unit(unit: str, mode: str = JOB_MODE_REPLACE) -> Message:
    return new_method_call(MANAGER, "RestartUnit", "ss", (unit, mode))


def reset_failed_unit(unit: str) -> Message:
    return new_method_call(MANAGER, "ResetFailedUnit", "s", (unit,))


def list_units_by_patterns(patterns: list[str], states: list[str] | None = None) -> Message:
    return new_method_call(MANAGER, "ListUnitsByPatterns", "asas", (states or [], patterns))


def get_all_properties(unit: str, interface: str) -> Message:
    address = DBusAddress(unit_object_path(unit), bus_name=SYSTEMD, interface=PROPERTIES_IFACE)
    return new_method_call(address, "GetAll", "s", (interface,))


def job_removed_rule(with_sender: bool) -> MatchRule:
    """JobRemoved signals. The bus matches on systemd's well-known name; a local filter cannot, because
    signals arrive stamped with systemd's unique name."""
    return MatchRule(type="signal", sender=SYSTEMD if with_sender else None, interface=MANAGER_IFACE,
                     member="JobRemoved", path=MANAGER_PATH)


def unit_changes_rule(with_sender: bool) -> MatchRule:
    """PropertiesChanged on any unit: how a watcher learns that a unit changed state."""
    return MatchRule(type="signal", sender=SYSTEMD if with_sender else None, interface=PROPERTIES_IFACE,
                     member="PropertiesChanged", path_namespace="/org/freedesktop/systemd1/unit")


@dataclass(frozen=True)
class JobRemoved:
    job_id: int
    job_path: str
    unit: str
    result: str


def parse_job_removed(body: tuple[Any, ...]) -> JobRemoved:
    job_id, job_path, unit, result = body
    return JobRemoved(int(job_id), str(job_path), str(unit), str(result))


@dataclass(frozen=True)
class UnitChanged:
    """A unit's properties changed: its state is worth reading again."""

    unit: str


SystemdEvent = UnitChanged | JobRemoved


def event_from_signal(message: Message) -> SystemdEvent | None:
    """The typed event a JobRemoved or PropertiesChanged signal stands for; None for anything else, so
    callers never handle raw bus messages."""
    fields = message.header.fields
    member = fields.get(HeaderFields.member)
    if member == "JobRemoved" and fields.get(HeaderFields.interface) == MANAGER_IFACE:
        try:
            return parse_job_removed(message.body)
        except (TypeError, ValueError):
            return None
    if member == "PropertiesChanged":
        unit = unit_name_from_path(str(fields.get(HeaderFields.path, "")))
        return UnitChanged(unit) if unit is not None else None
    return None


@dataclass(frozen=True)
class UnitState:
    """What systemd says about one unit: the source of truth for an instance's status."""

    name: str
    load_state: str
    active_state: str
    sub_state: str
    result: str = ""
    n_restarts: int = 0
    exec_main_code: int = 0
    exec_main_status: int = 0
    main_pid: int = 0
    state_change_usec: int = 0
    active_enter_usec: int = 0
    fragment_path: str = ""
    source_path: str = ""
    job_type: str = ""
    invocation_id: str = ""
    exec_main_start_usec: int = 0
    exec_main_exit_usec: int = 0
    timeout_start_usec: int = 0

    @property
    def main_ran_seconds(self) -> float | None:
        if not self.exec_main_start_usec or self.exec_main_exit_usec < self.exec_main_start_usec:
            return None
        return (self.exec_main_exit_usec - self.exec_main_start_usec) / 1e6

    @property
    def failed(self) -> bool:
        return self.active_state == "failed"


@dataclass(frozen=True)
class ListedUnit:
    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    job_type: str


def parse_list_units(body: tuple[Any, ...]) -> list[ListedUnit]:
    rows = body[0]
    return [ListedUnit(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[8])) for r in rows]


def unwrap_properties(body: tuple[Any, ...]) -> dict[str, Any]:
    """GetAll answers {name: (signature, value)}; keep the values."""
    return {str(name): variant[1] for name, variant in body[0].items()}


def unit_state(name: str, unit_props: dict[str, Any], service_props: dict[str, Any] | None = None) -> UnitState:
    service_props = service_props or {}
    job = unit_props.get("Job", (0, "/"))
    return UnitState(
        name=name,
        load_state=str(unit_props.get("LoadState", "")),
        active_state=str(unit_props.get("ActiveState", "")),
        sub_state=str(unit_props.get("SubState", "")),
        result=str(service_props.get("Result", "")),
        n_restarts=int(service_props.get("NRestarts", 0)),
        exec_main_code=int(service_props.get("ExecMainCode", 0)),
        exec_main_status=int(service_props.get("ExecMainStatus", 0)),
        main_pid=int(service_props.get("MainPID", 0)),
        state_change_usec=int(unit_props.get("StateChangeTimestamp", 0)),
        active_enter_usec=int(unit_props.get("ActiveEnterTimestamp", 0)),
        fragment_path=str(unit_props.get("FragmentPath", "")),
        source_path=str(unit_props.get("SourcePath", "")),
        job_type="" if not job or job[0] == 0 else "pending",
        invocation_id=bytes(unit_props.get("InvocationID", b"")).hex(),
        exec_main_start_usec=int(service_props.get("ExecMainStartTimestamp", 0)),
        exec_main_exit_usec=int(service_props.get("ExecMainExitTimestamp", 0)),
        timeout_start_usec=int(service_props.get("TimeoutStartUSec", 0)),
    )


# How a unit's main process ended: pure, so the status rules can say it without the diagnosis's I/O.
CLD_EXITED = 1  # ExecMainCode: the process exited (status is its exit code)
CLD_KILLED = 2
CLD_DUMPED = 3


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(state: UnitState) -> str:
    """How the last run of the unit's main process ended, e.g. `exited 3 after 0.7 s`."""
    ran = state.main_ran_seconds
    after = f" after {ran:.1f} s" if ran is not None else ""
    if state.exec_main_code in (CLD_KILLED, CLD_DUMPED):
        return f"killed by {_signal_name(state.exec_main_status)}{after}"
    return f"exited {state.exec_main_status}{after}"
