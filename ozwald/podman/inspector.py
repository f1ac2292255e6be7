# SPDX-License-Identifier: AGPL-3.0-or-later
"""Read-only access to Podman through its API socket, with podman-py.

Ozwald never starts containers through this API (systemd does, through Quadlet units); it asks Podman
what systemd cannot tell: whether an image exists, a container's health and OOM state, and its logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from podman import PodmanClient
from podman.errors import APIError, NotFound, PodmanError

DEFAULT_SOCKET = "unix:///run/podman/podman.sock"


class PodmanUnavailable(Exception):
    """The Podman API socket cannot be reached (is podman.socket enabled?)."""


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


class PodmanInspector:
    def __init__(self, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url or os.environ.get("CONTAINER_HOST") or DEFAULT_SOCKET
        self._client = PodmanClient(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> PodmanInspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, what: str, error: Exception) -> PodmanUnavailable:
        return PodmanUnavailable(f"cannot {what} through the Podman API at {self.base_url}: {error}")

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except (PodmanError, OSError):
            return False

    def version(self) -> str:
        try:
            info = self._client.version()  # type: ignore[no-untyped-call]
        except (PodmanError, OSError) as exc:
            raise self._guard("read the version", exc) from None
        return str(info.get("Version", ""))

    def image_exists(self, reference: str) -> bool:
        try:
            return bool(self._client.images.exists(reference))
        except (PodmanError, OSError) as exc:
            raise self._guard(f"look up image {reference}", exc) from None

    def container(self, name: str) -> ContainerState | None:
        try:
            container = self._client.containers.get(name)
        except NotFound:
            return None
        except (PodmanError, OSError) as exc:
            raise self._guard(f"inspect container {name}", exc) from None
        return container_state_from_inspect(container.attrs)

    def containers(self, label: str = "ozwald.managed=true") -> list[ContainerState]:
        """Every container carrying `label`, running or not: how leaks and duplicates are found."""
        try:
            # podman-py sends a list of labels as one malformed filter; a single string works.
            found = self._client.containers.list(all=True, filters={"label": label})
        except (PodmanError, OSError) as exc:
            raise self._guard("list containers", exc) from None
        states = []
        for container in found:
            try:
                container.reload()
            except NotFound:
                continue
            states.append(container_state_from_inspect(container.attrs))
        return states

    def logs(self, name: str, tail: int = 20) -> list[str]:
        """The container's last lines of output, or [] when the container is gone."""
        try:
            container = self._client.containers.get(name)
            raw = container.logs(stdout=True, stderr=True, tail=tail, stream=False)
        except NotFound:
            return []
        except APIError:
            return []
        except (PodmanError, OSError) as exc:
            raise self._guard(f"read logs of {name}", exc) from None
        data = b"".join(raw) if not isinstance(raw, bytes | bytearray) else bytes(raw)
        return data.decode("utf-8", errors="replace").splitlines()[-tail:]
