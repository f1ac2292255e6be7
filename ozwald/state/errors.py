# SPDX-License-Identifier: AGPL-3.0-or-later
"""Errors of the state layer.

They are typed so that the API can map them to answers (503 for an unreachable Redis, 500 for a
corrupt record) without string matching, and so that a caller can tell "Redis is down, retry later"
from "the data is damaged, a person must look".
"""

from __future__ import annotations

import pydantic

from ozwald.errors import Exit, OzwaldError


class StateError(OzwaldError):
    """The state store refused or failed an operation."""

    exit_status = Exit.FAILED


class StateUnavailable(StateError):
    """Redis cannot be reached, timed out, or refused our credentials.

    `endpoint` names host:port or the socket path so that an operator knows where to look; the
    password never appears in it, nor in the message.
    """

    exit_status = Exit.UNREACHABLE
    http_status = 503

    def __init__(self, message: str, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class StateCorrupt(StateError):
    """A stored record does not parse.

    Raised instead of returning an empty state: an empty desired set means "stop everything", so a
    damaged record must never be mistaken for one.
    """

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


class QueueFull(StateError):
    """The profiling queue already holds its maximum number of pending requests.

    429, not 503: the provisioner is healthy and answers every other request; what the callers asked for
    is over a limit, and a 503 would read as "Ozwald or its Redis is down" (exit 3 on the command line, an
    unhealthy backend to a proxy). A queued run takes minutes, hence the long Retry-After.
    """

    exit_status = Exit.USAGE
    http_status = 429
    retry_after_s = 60

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class IdentityError(OzwaldError):
    """This process cannot tell which configured provisioner it is.

    `candidates` lists the configured provisioner names, for the error message and for callers that
    want to offer a choice.
    """

    exit_status = Exit.USAGE

    def __init__(self, message: str, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


def first_validation_error(exc: pydantic.ValidationError) -> tuple[str, str]:
    """(field path, message) of the first error: one precise hint beats pydantic's multi-line dump."""
    errors = exc.errors()
    if not errors:
        return "body", str(exc)
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ())) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return loc, f"{first.get('msg', 'invalid')}{more}"


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    loc, message = first_validation_error(exc)
    return f"{loc}: {message}"
