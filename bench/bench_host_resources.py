# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /srv/host/resources (goal: under 10 ms per call), beside GET /srv/services/active/ (served from memory).

Ozwald runs in a test host with the stand-in NVML of tests/resources/fakes installed as `pynvml` (two GPUs,
as in tests/integration/test_gpu_admission.py), so the NVML wrapper's path is exercised; real NVML calls
cost more and need the device tool. Run as root: `.venv/bin/python -m bench.bench_host_resources`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.deployed import Api
from tests.deploy.guest import VENV, ProvisionerDeployment, VenvInstaller, build_wheelhouse, dev_cache_root
from tests.integration.test_gpu_admission import FAKES, SHIM, cdi_spec
from tests.testhost.harness import TestHost

CALLS = 100


def timed(api: Api, path: str) -> list[float]:
    api.raw("GET", path)  # warm the connection
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        status, _ = api.raw("GET", path)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    return samples


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, TestHost() as host:
        installer = VenvInstaller(build_wheelhouse(Path(tmp)), cache_dir=dev_cache_root() / "venvs")
        ozwald = ProvisionerDeployment(host, installer)
        ozwald.install(ozwald.default_config())
        site = next(host.guest_path(f"{VENV}/lib").glob("python3*/site-packages"))
        (site / "ozwald_fake_pynvml.py").write_text(FAKES.read_text())
        (site / "pynvml.py").write_text(SHIM)
        host.write_file("/etc/cdi/test-nvidia.json", cdi_spec())
        ozwald.start()
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        for path in ("/srv/host/resources", "/srv/services/active/", "/srv/host/resources", "/srv/services/active/"):
            samples = timed(api, path)
            q = statistics.quantiles(samples, n=100)
            print(f"{path:<24} {CALLS} calls: median {statistics.median(samples):.2f} ms, p99 {q[98]:.2f} ms, "
                  f"max {max(samples):.2f} ms")
        ozwald.stop()


if __name__ == "__main__":
    main()
