# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reading a request: its body (bounded), its JSON, its query parameters and the service requests it carries,
each refused with `{"detail": ...}` naming the field (an `ApiError`) before any handler acts on it.

Kept apart from the routes (`ozwald.api.app`), which only decide what to answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from ozwald.errors import Exit, OzwaldError
from ozwald.records import ServiceRequest, check_unique_names

MAX_BODY_BYTES = 1024 * 1024
MAX_REPORTED_ERRORS = 50
_READ_CHUNK = 64 * 1024
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
MAX_REVISION = 2**63 - 1
MAX_WAIT_S = 60.0
DEFAULT_WAIT_S = 30.0

Environ = Mapping[str, Any]


class ApiError(OzwaldError):
    """An error of the HTTP layer itself (a bad query, a body too large, no token), answered as
    `{"detail": detail}` with `status` (and any extra headers)."""

    exit_status = Exit.USAGE

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        self.status = self.http_status = status
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {detail}")

    def api_detail(self) -> Any:
        return self.detail

    def http_headers(self) -> dict[str, str]:
        return dict(self.headers)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused rather than sent as invalid JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def error_body(detail: Any) -> bytes:
    return dumps({"detail": detail})


def _problem(index: int | None, field: str, message: str) -> dict[str, Any]:
    return {"index": index, "field": field, "message": message}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def read_body(environ: Environ, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the request body, refusing (413) anything over `limit` bytes.

    A declared Content-Length over the limit is refused before reading; otherwise at most
    `limit + 1` bytes are ever read, so a body without a (truthful) length cannot grow unbounded.
    """
    declared = environ.get("CONTENT_LENGTH") or ""
    want = limit + 1
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length") from None
        if length < 0:
            raise ApiError(400, "invalid Content-Length")
        if length > limit:
            raise ApiError(413, f"request body too large: at most {limit} bytes")
        want = length
    stream = environ.get("wsgi.input")
    if stream is None or want == 0:
        return b""
    chunks: list[bytes] = []
    total = 0
    while total < want:
        chunk = stream.read(min(_READ_CHUNK, want - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise ApiError(413, f"request body too large: at most {limit} bytes")
    return b"".join(chunks)


def read_json(environ: Environ, what: str) -> Any:
    """The body as parsed JSON; 422 when it is empty or not JSON."""
    raw = read_body(environ)
    if not raw.strip():
        raise ApiError(422, _problem(None, "body", f"the body is empty: send {what}"))
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(422, _problem(None, "body", "the body is nested too deeply")) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(422, _problem(None, "body", f"the body is not valid JSON ({exc})")) from None


def _validation_problems(index: int, exc: ValidationError) -> list[dict[str, Any]]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown field (a service request has name, service, variety, profile)"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(_problem(index, field, message))
    return problems


def parse_service_requests(data: Any) -> list[ServiceRequest]:
    """Validate an update/plan body: a JSON array of ServiceRequest objects with unique names.

    Raises ApiError(422) when the body is not an array of objects, ApiError(400) naming the item
    index and field when an item is invalid, and UpdateError for a duplicate instance name.
    """
    if not isinstance(data, list):
        raise ApiError(422, _problem(None, "body", f"expected a JSON array of service requests, got {_kind(data)}"))
    items: list[ServiceRequest] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ApiError(422, _problem(index, "", f"expected a JSON object, got {_kind(item)}"))
        try:
            items.append(ServiceRequest.model_validate(item))
        except ValidationError as exc:
            problems.extend(_validation_problems(index, exc))
    if problems:
        raise ApiError(400, {**problems[0], "errors": problems[:MAX_REPORTED_ERRORS]})
    check_unique_names(items)
    return items


def query(environ: Environ, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """The query parameters, refusing unknown ones: a misspelt `forse=true` must not pass silently."""
    pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    for name, _ in pairs:
        if name not in allowed:
            shown = name if name.isprintable() and len(name) <= 40 else repr(name[:40])
            raise ApiError(422, _problem(None, "query", f"unknown query parameter {shown}"))
    return pairs


def force_query(environ: Environ) -> bool:
    values = [value for name, value in query(environ, frozenset({"force"})) if name == "force"]
    if not values:
        return False
    value = values[-1]
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ApiError(422, _problem(None, "force", "expected true or false"))


def watch_query(environ: Environ) -> tuple[int | None, float]:
    """`after` (a revision) and `wait` (seconds) of GET /srv/services/active/; 422 naming the field."""
    after: int | None = None
    wait: float | None = None
    for name, value in query(environ, frozenset({"after", "wait"})):
        if name == "after":
            if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_REVISION:
                raise ApiError(422, _problem(None, "after", "expected a revision: the X-Ozwald-Revision "
                                                            "header of an earlier answer"))
            after = int(value)
        else:
            wait = wait_seconds(value)
    return after, DEFAULT_WAIT_S if wait is None else wait  # without after, wait has nothing to wait past


def wait_seconds(value: str) -> float:
    """A `wait` query value: seconds from 0 to MAX_WAIT_S, else 422 naming the field."""
    try:
        wait = float(value)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:  # also refuses nan and inf
        raise ApiError(422, _problem(None, "wait", f"expected seconds from 0 to {MAX_WAIT_S:g}"))
    return wait


def wait_query(environ: Environ) -> float | None:
    """`wait` (seconds) of a wake or sleep, None when not given; 422 naming the field."""
    wait: float | None = None
    for _, value in query(environ, frozenset({"wait"})):
        wait = wait_seconds(value)
    return wait
