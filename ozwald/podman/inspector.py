# SPDX-License-Identifier: AGPL-3.0-or-later
"""Read-only access to Podman through its API socket, with the standard library's http.client.

Ozwald never starts containers through this API (systemd does, through Quadlet units); it asks Podman
what systemd cannot tell: whether an image exists, a container's health and OOM state, and its logs.

Five GET requests are all it needs, so it speaks HTTP/1.1 over the unix socket itself instead of using
podman-py: podman-py brings requests, urllib3 and their imports, about 8.5 MB of the provisioner's
resident memory and 35 ms of its start, for calls that are one line of http.client each.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ozwald.errors import Exit, OzwaldError
from ozwald.sockets import connect_unix

DEFAULT_SOCKET = "unix:///run/podman/podman.sock"
API_PREFIX = "/v4.0.0/libpod"  # Podman 4.0 and later serve this version of the libpod API
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream (0 stdin, 1 stdout, 2 stderr), 3 padding bytes, length


class PodmanUnavailable(OzwaldError):
    """The Podman API socket cannot be reached (is podman.socket enabled?)."""

    exit_status = Exit.UNREACHABLE
    http_status = 503


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created, running, exited, stopped, …
    running: bool
    exit_code: int
    oom_killed: bool
    started_at: datetime | None
    finished_at: datetime | None
    health: str  # healthy, unhealthy, starting, or "" without a health check
    failing_streak: int
    last_health_output: str
    labels: dict[str, str]

    @property
    def ran_for_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    # Podman prints nanoseconds; Python keeps microseconds.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def container_state_from_inspect(attrs: dict[str, Any]) -> ContainerState:
    """Build a ContainerState from `podman inspect` data (the API's container JSON)."""
    state = attrs.get("State") or {}
    health = state.get("Health") or state.get("Healthcheck") or {}
    log = health.get("Log") or []
    last_output = str(log[-1].get("Output", "")).strip() if log else ""
    config = attrs.get("Config") or {}
    return ContainerState(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        status=str(state.get("Status", "")),
        running=bool(state.get("Running", False)),
        exit_code=int(state.get("ExitCode", 0) or 0),
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
        health=str(health.get("Status", "")),
        failing_streak=int(health.get("FailingStreak", 0) or 0),
        last_health_output=last_output,
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
    )


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix stream socket (the Podman API's usual transport)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = connect_unix(self._path, self.timeout)


class _ApiError(OzwaldError):
    """Podman answered with an unexpected HTTP status (its JSON `message` when it sent one). Caught inside this
    module; escaping it would be a bug (the defaults: exit 70, 500)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _transport(base_url: str) -> tuple[str | None, str, int]:
    """(unix socket path, host, port) of a Podman URL: unix://PATH, http+unix://PATH, tcp://H:P or http://H:P."""
    parts = urlsplit(base_url)
    if parts.scheme in ("unix", "http+unix"):
        path = parts.path if not parts.netloc else parts.netloc + parts.path
        if not path:
            raise ValueError(f"no socket path in the Podman URL {base_url!r}")
        return path, "localhost", 0
    if parts.scheme in ("tcp", "http") and parts.hostname:
        return None, parts.hostname, parts.port or 8080
    raise ValueError(f"unsupported Podman URL {base_url!r}: expected unix://PATH or tcp://HOST:PORT")


def demultiplex(data: bytes) -> bytes:
    """The output of a logs answer: Podman frames each chunk (8-byte header) when the container has no TTY."""
    out = bytearray()
    view = memoryview(data)
    offset = 0
    while offset + _FRAME_HEADER.size <= len(data):
        stream, length = _FRAME_HEADER.unpack_from(view, offset)
        if stream not in (0, 1, 2):
            return data  # not framed: a TTY container's raw output
        offset += _FRAME_HEADER.size
        out += view[offset:offset + length]
        offset += length
    if offset == 0 and data:
        return data
    return bytes(out)


class PodmanInspector:
    """A client of the Podman API; thread-safe (one short connection per request)."""

    def __init__(self, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url or os.environ.get("CONTAINER_HOST") or DEFAULT_SOCKET
        self.timeout = timeout
        self._socket_path, self._host, self._port = _transport(self.base_url)

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def __enter__(self) -> PodmanInspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, what: str, error: Exception) -> PodmanUnavailable:
        return PodmanUnavailable(f"cannot {what} through the Podman API at {self.base_url}: {error}")

    def _connection(self) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixHTTPConnection(self._socket_path, self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _get(self, path: str, query: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of GET path; OSError or http.client.HTTPException when Podman cannot be reached."""
        url = API_PREFIX + path + (("?" + urlencode(query)) if query else "")
        connection = self._connection()
        try:
            connection.request("GET", url, headers={"Accept": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _get_json(self, path: str, query: dict[str, str] | None = None) -> Any:
        """The decoded JSON of a 200 answer; None for 404; _ApiError for any other status."""
        status, body = self._get(path, query)
        if status == 404:
            return None
        if status != 200:
            raise _ApiError(status, _message(body))
        return json.loads(body)

    def ping(self) -> bool:
        try:
            status, _ = self._get("/_ping")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def version(self) -> str:
        try:
            info = self._get_json("/version")
        except (OSError, http.client.HTTPException, ValueError, _ApiError) as exc:
            raise self._guard("read the version", exc) from None
        return str((info or {}).get("Version", ""))

    def image_exists(self, reference: str) -> bool:
        try:
            status, body = self._get(f"/images/{_quote(reference)}/exists")
        except (OSError, http.client.HTTPException) as exc:
            raise self._guard(f"look up image {reference}", exc) from None
        if status not in (204, 404):
            raise self._guard(f"look up image {reference}", _ApiError(status, _message(body)))
        return status == 204

    def container(self, name: str) -> ContainerState | None:
        try:
            attrs = self._get_json(f"/containers/{_quote(name)}/json")
        except (OSError, http.client.HTTPException, ValueError, _ApiError) as exc:
            raise self._guard(f"inspect container {name}", exc) from None
        return None if attrs is None else container_state_from_inspect(attrs)

    def containers(self, label: str = "ozwald.managed=true") -> list[ContainerState]:
        """Every container carrying `label`, running or not: how leaks and duplicates are found."""
        try:
            found = self._get_json("/containers/json", {"all": "true", "filters": json.dumps({"label": [label]})})
        except (OSError, http.client.HTTPException, ValueError, _ApiError) as exc:
            raise self._guard("list containers", exc) from None
        states = []
        for entry in found or []:
            state = self.container(str(entry.get("Id", "")))
            if state is not None:  # removed between the list and the inspect
                states.append(state)
        return states

    def running_ids(self, names: list[str]) -> dict[str, str]:
        """The ids of the running containers among `names` (name → id), in one list call: how the ids of
        many instances that just became available are found without one inspect each."""
        if not names:
            return {}
        patterns = [f"^{re.escape(name)}$" for name in names]  # Podman matches names as regular expressions
        try:
            found = self._get_json("/containers/json", {"filters": json.dumps({"name": patterns})})
        except (OSError, http.client.HTTPException, ValueError, _ApiError) as exc:
            raise self._guard("list containers", exc) from None
        wanted = set(names)
        ids: dict[str, str] = {}
        for entry in found or []:
            for name in entry.get("Names") or []:
                if str(name).lstrip("/") in wanted:
                    ids[str(name).lstrip("/")] = str(entry.get("Id", ""))
        return ids

    def logs(self, name: str, tail: int = 20) -> list[str]:
        """The container's last lines of output, or [] when the container is gone."""
        try:
            status, body = self._get(f"/containers/{_quote(name)}/logs",
                                     {"stdout": "true", "stderr": "true", "tail": str(tail)})
        except (OSError, http.client.HTTPException) as exc:
            raise self._guard(f"read logs of {name}", exc) from None
        if status != 200:
            return []
        return demultiplex(body).decode("utf-8", errors="replace").splitlines()[-tail:]


def _quote(name: str) -> str:
    """A container or image reference as one path segment (a reference such as localhost/x:1 keeps its slash)."""
    return quote(name, safe="/:@")


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", errors="replace")
