# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald installed in a test host as users install it: the Debian package from `make packages`.

Used by tests/deploy/test_package.py and by `make demo` (contrib/demo.py). Everything goes through what an
operator has: `apt-get install ./ozwald_*.deb`, systemctl, the `ozwald` command in the guest, and the HTTP
API from outside the guest. The guest's rootfs recipe pre-seeds the package's dependencies, so the install
runs offline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.testhost.harness import TESTSERVER_IMAGE, TestHost

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST = REPO_ROOT / "dist"
SETTINGS = "/etc/ozwald/ozwald.yml"
ENV_FILE = "/etc/ozwald/ozwald.env"
API_PORT = 8000
SERVICE_PORT = 8100

# The test service, appended to the packaged example settings (its images do not exist in a test host).
TEST_SERVICE = f"""
  - name: hello
    description: an OpenAI-compatible test server (baked into the test host)
    image: {TESTSERVER_IMAGE}
    ports: ["{SERVICE_PORT}:8000"]
    health: {{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}}
    environment: {{MODEL_NAME: hello, GREETING: "one"}}
  - name: lazy
    description: the test server on demand
    image: {TESTSERVER_IMAGE}
    ports: ["{SERVICE_PORT + 1}:8000"]
    on_demand: {{idle_stop: 30s}}
"""


class PackageError(AssertionError):
    pass


def find_deb() -> Path:
    debs = sorted(DIST.glob("ozwald_*_all.deb"))
    if not debs:
        raise PackageError(f"no ozwald_*_all.deb in {DIST}: run `make packages` first")
    return debs[-1]


class InstalledOzwald:
    def __init__(self, host: TestHost, deb: Path | None = None) -> None:
        self.host = host
        self.deb = deb or find_deb()
        self.timings: dict[str, float] = {}
        self._example: str | None = None
        self.api_port = API_PORT

    # -- as the operator, in the guest ------------------------------------------------------------

    def sh(self, *argv: str, timeout: float = 120.0, check: bool = True) -> str:
        result = self.host.exec(list(argv), timeout=timeout)
        if check and result.returncode != 0:
            raise PackageError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def install(self) -> None:
        guest_deb = f"/root/{self.deb.name}"
        self.host.write_file(guest_deb, self.deb.read_bytes())
        started = time.monotonic()
        self.sh("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                "-o", "Dpkg::Use-Pty=0", guest_deb, timeout=300)
        self.timings.setdefault("apt_install_s", time.monotonic() - started)

    def purge(self) -> str:
        started = time.monotonic()
        out = self.sh("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "purge", "-y", "-q", "-o",
                      "Dpkg::Use-Pty=0", "ozwald", timeout=300)
        self.timings["apt_purge_s"] = time.monotonic() - started
        return out

    def ozwald(self, *args: str, timeout: float = 120.0) -> Any:
        """`ozwald ARGS` in the guest as root in a shell would run it (the key comes from ozwald.env)."""
        return self.host.exec(["ozwald", *args], timeout=timeout)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120.0) -> Any:
        return self.host.systemctl(*args, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def env_file(self) -> dict[str, str]:
        values = {}
        for line in self.host.read_file(ENV_FILE).splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
        return values

    def open_api_to_the_test_machine(self) -> None:
        """The operator's choice to serve the API beyond loopback: OZWALD_API_HOST in ozwald.env."""
        text = self.host.read_file(ENV_FILE)
        if "OZWALD_API_HOST=" not in text:
            self.host.write_file(ENV_FILE, text + "OZWALD_API_HOST=0.0.0.0\n", mode=0o600)

    def write_settings(self, text: str) -> None:
        self.host.write_file(SETTINGS, text, mode=0o644)

    def example_settings_with_test_service(self, greeting: str = "one") -> str:
        if self._example is None:
            self._example = self.host.read_file(SETTINGS)
        return self._example.rstrip("\n") + "\n" + TEST_SERVICE.replace('GREETING: "one"', f'GREETING: "{greeting}"')

    # -- the API, from the test machine -------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.env_file()["OZWALD_SYSTEM_KEY"]

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://{self.host.ip}:{port or self.api_port}{path}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url(path), data=data, method=method)
        if path != "/health":
            request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def active(self) -> dict[str, dict[str, Any]]:
        status, body = self.request("GET", "/srv/services/active/")
        if status != 200:
            raise PackageError(f"GET /srv/services/active/ answered {status}: {body}")
        return {s["name"]: s for s in body}

    def wait_for(self, check: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (OSError, PackageError) as exc:
                last = exc
                if isinstance(exc, PackageError):
                    raise
            else:
                if last:
                    return last
            time.sleep(0.25)
        raise PackageError(f"timed out after {timeout:g} s waiting for {what}; last: {last}\n"
                           f"{self.host.journal('ozwald.service', lines=40)}")

    def wait_available(self, name: str, timeout: float = 120.0, **match: Any) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            service = self.active().get(name)
            if service and service["status"] == "failed":
                raise PackageError(f"{name} failed: {service['info'].get('reason')}")
            if service and service["status"] == "available" and all(
                    service.get(k) == v or service["info"].get(k) == v for k, v in match.items()):
                return service
            return None

        result: dict[str, Any] = self.wait_for(ready, timeout, f"{name} available {match or ''}")
        return result

    def service_env(self) -> dict[str, str]:
        with urllib.request.urlopen(self.url("/env", SERVICE_PORT), timeout=5) as response:
            env: dict[str, str] = json.loads(response.read())
        return env
