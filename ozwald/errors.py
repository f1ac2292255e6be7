# SPDX-License-Identifier: Apache-2.0
"""Ozwald's error model: every error Ozwald raises on purpose says what the command line and the API make
of it, where it is defined.

    class QueueFull(StateError):
        exit_status = Exit.USAGE
        http_status = 429

The `ozwald` command maps an error to its exit status and message lines in one place
(`ozwald.cli.common.failure`), the API to its status, headers and `{"detail": ...}` body in one place
(`ozwald.api.app.error_answer`); neither knows the classes. An error that declares nothing inherits
`Exit.BUG` and 500: escaping to the surface, it is a bug in Ozwald (control flow such as a WATCH retry).
A leaf module, below every layer, so that each layer's errors can derive from it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    """The exit statuses of `ozwald`, as `ozwald --help` and the man page document them."""

    OK = 0
    FAILED = 1  # the operation ran but the outcome is bad: an instance failed, the provisioner is unhealthy
    USAGE = 2  # an operator error: bad settings, an unknown name, a bad argument, a request the API refused
    UNREACHABLE = 3  # something needed cannot be reached: the API, systemd (D-Bus), Redis, Podman
    TIMEOUT = 4  # timed out waiting
    BUG = 70  # an error Ozwald did not expect: a bug (sysexits.h EX_SOFTWARE); the traceback is in the debug log


INTERNAL_ERROR = "internal error"


class OzwaldError(Exception):
    """The base of Ozwald's errors: what the CLI exits with, what the API answers."""

    # Class attributes; an instance may override them (an error that carries the status it was answered with).
    exit_status: Exit = Exit.BUG
    http_status: int = 500

    def cli_lines(self) -> list[str]:
        """What `ozwald` prints, one `error: ` line each."""
        return [str(self)]

    def api_detail(self) -> Any:
        """The JSON-ready `detail` of the API's answer. A 500 says no more than "internal error": its
        message is for the log, not for whoever sent the request."""
        return INTERNAL_ERROR if self.http_status == 500 else str(self)

    def http_headers(self) -> dict[str, str]:
        """Extra headers of the API's answer (Retry-After, WWW-Authenticate)."""
        return {}
