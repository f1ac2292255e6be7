# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's drivers pointed at a booted test host, as the provisioner would hold them on a real host."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ozwald.config import Settings, resolve
from ozwald.diagnose import explain_failure
from ozwald.podman import PodmanInspector
from ozwald.quadlet import RenderedUnit, render_unit
from ozwald.systemd import SystemdClient
from ozwald.systemd.journal import container_log_tail
from ozwald.units import UnitStore
from tests.testhost.harness import TestHost

TESTSERVER = "localhost/ozwald-testserver:latest"
PYTHON_HEALTH = {"http": "http://127.0.0.1:8000/health", "probe": "python3", "interval": "1s", "timeout": "2s"}


@dataclass
class Drivers:
    host: TestHost
    systemd: SystemdClient
    podman: PodmanInspector
    store: UnitStore

    @property
    def journal_prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.host.pid1), "-m", "-u", "-i", "-n", "-p"]

    def install(self, settings: Settings, instance: str, service: str | None = None) -> RenderedUnit:
        """Render, write atomically and reload: the provisioner's apply path for one instance."""
        unit = render_unit(resolve(settings, service or instance), instance)
        self.store.write(unit, persistent=False)
        self.systemd.reload()
        return unit

    def explain(self, settings: Settings, unit: RenderedUnit, service: str | None = None) -> str:
        spec = resolve(settings, service or unit.instance)
        state = self.systemd.unit_state(unit.unit_name)
        logs = container_log_tail(f"ozwald-{unit.instance}", 20, command_prefix=self.journal_prefix)
        return explain_failure(state, image=spec.image, has_health_check=spec.health is not None, logs=logs,
                               podman=self.podman)

    def remove(self, *instances: str) -> None:
        for instance in instances:
            self.store.remove(instance)
        self.systemd.reload()


@contextmanager
def drivers_for(host: TestHost) -> Iterator[Drivers]:
    store = UnitStore(runtime_dir=host.guest_path("/run/containers/systemd"),
                      persistent_dir=host.guest_path("/etc/containers/systemd"))
    systemd = SystemdClient(host.bus_address)
    podman = PodmanInspector(host.podman_socket)
    try:
        yield Drivers(host, systemd, podman, store)
    finally:
        podman.close()
        systemd.close()


def settings_for(*services: dict[str, Any]) -> Settings:
    return Settings.model_validate({"services": list(services)})


def server(name: str, **keys: Any) -> dict[str, Any]:
    """A test-server service: OpenAI-compatible stand-in for vLLM; env switches make it misbehave."""
    return {"name": name, "image": TESTSERVER, "restart": "no", **keys}


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
