# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the API benchmarks share: a booted test host with Ozwald deployed as ozwald.service, a keep-alive
HTTP client for its API, and readings from the guest's /proc.

The deployment is the integration tests' own (tests/deploy/guest.py), used without pytest: the wheelhouse
from tools/build-wheelhouse.sh, the venv unpacked from /var/cache/ozwald-dev/venvs when the sources did not
change (built in the guest otherwise), the guest's Redis with a password, the unit from units/.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.deploy.guest import ProvisionerDeployment, VenvInstaller, build_wheelhouse, dev_cache_root
from tests.testhost.harness import TestHost

TESTSERVER = "localhost/ozwald-testserver:latest"


@contextlib.contextmanager
def deployed(services: str) -> Iterator[tuple[TestHost, ProvisionerDeployment]]:
    """Boot a test host, install Ozwald with `services` (YAML list items, indented by two spaces), start it."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ozbench-wheels-") as tmp, TestHost() as host:
        wheelhouse = build_wheelhouse(Path(tmp))
        installer = VenvInstaller(wheelhouse, cache_dir=dev_cache_root() / "venvs")
        deployment = ProvisionerDeployment(host, installer)
        deployment.install(deployment.default_config(services))
        deployment.start()
        print(f"# test host {host.name} ({host.ip}) booted in {host.timings.get('boot_s', 0):.1f} s; Ozwald "
              f"installed in {deployment.timings['install_s']:.1f} s ("
              f"{'built' if installer.builds else 'unpacked'} venv); ready after "
              f"{time.monotonic() - started:.1f} s", flush=True)
        try:
            yield host, deployment
        finally:
            with contextlib.suppress(Exception):
                deployment.stop()


class Api:
    """One keep-alive HTTP/1.1 connection to an API in the guest (reconnects after an error)."""

    def __init__(self, host: str, port: int, key: str, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Authorization": f"Bearer {key}"}
        self.last_headers: dict[str, str] = {}  # of the last answer, names in lower case
        self._conn: http.client.HTTPConnection | None = None

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                self.last_headers = {k.lower(): v for k, v in response.getheaders()}
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, raw = self.raw(method, path, body)
        return status, json.loads(raw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def vm_rss_kib(host: TestHost, guest_pid: int) -> int | None:
    """VmRSS of a guest process (guest pid), read through the guest's own /proc; None when it is gone."""
    try:
        text = host.guest_path(f"/proc/{guest_pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def main_pid(host: TestHost, unit: str) -> int:
    out = host.systemctl("show", unit, "-p", "MainPID", "--value").stdout.strip()
    return int(out or 0)


def monotonic_props(host: TestHost, unit: str, *names: str) -> dict[str, float]:
    """`<name>Monotonic` unit properties in seconds of CLOCK_MONOTONIC (shared with this machine: nspawn
    gives the guest no time namespace), 0.0 when unset."""
    props = ",".join(f"{n}Monotonic" for n in names)
    out = host.systemctl("show", unit, "-p", props).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {n: int(values.get(f"{n}Monotonic", "0") or 0) / 1e6 for n in names}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_count() -> int:
    return os.cpu_count() or 0
