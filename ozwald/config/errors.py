# SPDX-License-Identifier: AGPL-3.0-or-later
"""Configuration errors that point an operator at the exact file, line and setting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ozwald.errors import Exit, OzwaldError


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a settings file.

    `path` is written the way an operator reads YAML (`services[0].varieties.nvidia.image`), because
    that is what they search for in their editor; `line` is 1-based, or None when the setting is absent
    from the file (for example a required key that is missing, reported at its parent's line).
    """

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<settings>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(OzwaldError):
    """Raised for any invalid settings; carries every issue found, not just the first."""

    exit_status = Exit.USAGE

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def cli_lines(self) -> list[str]:
        return [str(issue) for issue in self.issues]


class ResolveError(OzwaldError):
    """Raised when a request names a service, variety or profile the settings do not define.

    `field` is the request field at fault (`service`, `variety`, `profile`), so an API can say which
    item and which field to fix.
    """

    exit_status = Exit.USAGE
    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)

    def cli_lines(self) -> list[str]:
        return [f"{self.field}: {self.message}"]

    def api_detail(self) -> dict[str, Any]:
        return {"index": None, "field": self.field, "message": self.message}


def format_path(parts: Sequence[str | int]) -> str:
    """Join path parts as `a.b[0].c`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = part
    return out
