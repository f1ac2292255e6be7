# SPDX-License-Identifier: AGPL-3.0-or-later
"""Typed errors for systemd operations, each carrying the unit and systemd's own words."""

from __future__ import annotations

from ozwald.errors import Exit, OzwaldError


class SystemdError(OzwaldError):
    """A D-Bus call to systemd failed. `dbus_name` is the D-Bus error name, `message` systemd's text."""

    exit_status = Exit.FAILED

    def __init__(self, unit: str | None, dbus_name: str, message: str) -> None:
        self.unit = unit
        self.dbus_name = dbus_name
        self.message = message
        prefix = f"{unit}: " if unit else ""
        super().__init__(f"{prefix}{message} ({dbus_name})")


class UnitNotFound(SystemdError):
    """systemd has no such unit: for a Quadlet unit, usually a generator error (see `quadlet -dryrun`)."""

    exit_status = Exit.USAGE  # for the command line: Ozwald's units are not installed here


class AccessDenied(SystemdError):
    """The caller may not manage units: run as root, or grant it through polkit."""

    exit_status = Exit.USAGE


class BusUnavailable(OzwaldError):
    """The system bus cannot be reached (no socket, or systemd is not running there)."""

    exit_status = Exit.UNREACHABLE
    http_status = 503


class JobFailed(OzwaldError):
    """A start/stop/restart job ended with a result other than `done`.

    `result` is systemd's JobRemoved result: failed, timeout, canceled, dependency, skipped, invalid.
    """

    exit_status = Exit.FAILED

    def __init__(self, unit: str, operation: str, result: str) -> None:
        self.unit = unit
        self.operation = operation
        self.result = result
        super().__init__(f"{unit}: {operation} job ended with result {result!r}")


class WaitTimeout(OzwaldError, TimeoutError):
    """A job or a unit state did not come within the time given (still a TimeoutError for callers)."""

    exit_status = Exit.TIMEOUT
    http_status = 504


ERROR_CLASSES: dict[str, type[SystemdError]] = {
    "org.freedesktop.systemd1.NoSuchUnit": UnitNotFound,
    "org.freedesktop.systemd1.LoadFailed": UnitNotFound,
    "org.freedesktop.DBus.Error.AccessDenied": AccessDenied,
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": AccessDenied,
}


def error_for(unit: str | None, dbus_name: str, message: str) -> SystemdError:
    return ERROR_CLASSES.get(dbus_name, SystemdError)(unit, dbus_name, message)
