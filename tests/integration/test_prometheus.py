# SPDX-License-Identifier: AGPL-3.0-or-later
"""A real Prometheus server scrapes a real provisioner, with the API token, and has the values it must have.

Ozwald runs as ozwald.service in the test host (the integration deployment), with the stand-in NVML of
tests/resources/fakes at the vendor-library seam (two 80 GB GPUs, as in test_gpu_admission). Debian's
`prometheus` runs on this machine (tools/install-system-deps.sh installs it), scraping the guest's API every
second with `authorization: {credentials_file: ...}`, as the README's scrape config does. The test drives a
start, a swap of profile and a crash loop through the API, then asks Prometheus' HTTP API for what it
scraped: status series, the restart count, the histogram's count, GPU memory.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.guest import ProvisionerDeployment
from tests.integration.api_kit import statuses, update, wait_for
from tests.integration.test_gpu_admission import UUIDS, start_with_stand_in_gpus
from tests.testhost.harness import TestHost

pytestmark = [pytest.mark.testhost,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus (Debian package) missing")]

GIB = 1024**3
IMAGE = "localhost/ozwald-testserver:latest"
SERVICES = f"""\
  - name: web
    image: {IMAGE}
    health: {{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s}}
    varieties:
      nvidia: {{resources: {{vram_gb: 50, gpus: 1}}}}
    profiles:
      small: {{environment: {{MODEL_NAME: small}}}}
      large: {{environment: {{MODEL_NAME: large}}}}
  - name: crashloop
    image: {IMAGE}
    min_uptime: 3s
    restart: on-failure
    restart_delay: 1s
    environment: {{CRASH_AFTER_S: "2"}}
"""


class Prometheus:
    """`prometheus` on this machine, on a free loopback port, with its data in a temporary directory."""

    def __init__(self, target: str, token: str, workdir: Path) -> None:
        token_file = workdir / "ozwald-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ozwald\n"
            "    authorization:\n"
            f"      credentials_file: {token_file}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=60, what="prometheus ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}: {Path(self.log.name).read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def ozwald(testhost: TestHost, ozwald_deployment: ProvisionerDeployment) -> Iterator[ProvisionerDeployment]:
    start_with_stand_in_gpus(testhost, ozwald_deployment, SERVICES)
    yield ozwald_deployment


@pytest.fixture(scope="module")
def prometheus(ozwald: ProvisionerDeployment, testhost: TestHost) -> Iterator[Prometheus]:
    with tempfile.TemporaryDirectory(prefix="ozwald-prometheus-") as workdir:
        server = Prometheus(f"{testhost.ip}:{ozwald.api_port}", ozwald.system_key, Path(workdir))
        try:
            yield server
        finally:
            server.close()


def eventually(prometheus: Prometheus, promql: str, expected: float, timeout: float = 30) -> None:
    """Prometheus has scraped `promql` == expected (it scrapes every second)."""
    wait_for(lambda: prometheus.value(promql) == expected, timeout=timeout,
             what=f"{promql} == {expected} in Prometheus (now {prometheus.query(promql)})")


def test_prometheus_scrapes_with_the_token(prometheus: Prometheus) -> None:
    eventually(prometheus, 'up{job="ozwald"}', 1)  # a 401 would be up == 0
    assert prometheus.value('ozwald_build_info{job="ozwald"}') == 1


def test_gpu_memory_at_the_stand_in_nvml(prometheus: Prometheus) -> None:
    gpu0 = f'gpu="nvidia:0",uuid="{UUIDS[0]}",vendor="nvidia"'
    eventually(prometheus, f"ozwald_gpu_memory_total_bytes{{{gpu0}}}", 80 * GIB)
    eventually(prometheus, f"ozwald_gpu_memory_used_bytes{{{gpu0}}}", 1 * GIB)


def test_a_start_a_swap_and_a_crash_loop_as_prometheus_saw_them(ozwald: ProvisionerDeployment,
                                                                  prometheus: Prometheus) -> None:
    update(ozwald, [{"name": "web", "variety": "nvidia", "profile": "small"}])
    wait_for(lambda: statuses(ozwald).get("web") == "available", timeout=120, what="web available")
    update(ozwald, [{"name": "web", "variety": "nvidia", "profile": "large"}])
    wait_for(lambda: statuses(ozwald).get("web") == "available", timeout=120, what="web swapped")
    eventually(prometheus, 'ozwald_instance_status{name="web",status="available",profile="large"}', 1)
    eventually(prometheus, 'ozwald_instance_status{name="web",status="starting",profile="large"}', 0)
    # the start and the swap, each timed from its post to available
    eventually(prometheus, 'ozwald_instance_change_to_available_seconds_count{service="web"}', 2)
    # the pinned GPU carries the declared 50 GB
    eventually(prometheus, 'sum(ozwald_gpu_memory_reserved_bytes{job="ozwald"})', 50 * GIB)

    update(ozwald, [{"name": "web", "variety": "nvidia", "profile": "large"}, {"name": "crashloop"}])
    wait_for(lambda: statuses(ozwald).get("crashloop") == "failed", timeout=180, what="crashloop failed")
    eventually(prometheus, 'ozwald_instance_status{name="crashloop",status="failed"}', 1)
    eventually(prometheus, 'ozwald_instance_restarts_total{name="crashloop"}', 5)
    eventually(prometheus, 'ozwald_instance_failures_total{name="crashloop"}', 1)
    eventually(prometheus, 'ozwald_instance_change_to_available_seconds_count{service="web"}', 2)  # kept: untimed
    generation = prometheus.value("ozwald_desired_generation")
    assert generation is not None
    eventually(prometheus, "ozwald_applied_generation", generation)
    assert (prometheus.value('sum(ozwald_api_requests_total{route="/metrics",code="200"})') or 0) >= 5
