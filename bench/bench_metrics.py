# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /metrics: what a scrape costs with 100 instances, what a scraper costs GET active, what the metrics
cost `ozwald serve`'s memory; side by side in one run.

1. In-process (this machine): a real Provisioner (core.py on a real Redis, the real NVML wrapper on the
   stand-in NVML with two GPUs) with 100 published statuses, 100 desired GPU instances (reservations) and
   profiling results; the scrape function the API calls, timed N times: p50/p99, and the first (uncached
   reservations) scrape.
2. Over HTTP: Ozwald deployed as ozwald.service in a test host (the integration deployment) with 100
   instances of a resource service (no container: all 100 `available` at once) and the stand-in NVML; wrk
   on this machine, one connection, on /metrics: p50/p99.
3. GET /srv/services/active/ (100 instances) with wrk at 8 connections, with and without a scraper that
   GETs /metrics every second (a thread here, one keep-alive connection), alternating: req/s ratio.
4. `ozwald serve`'s VmRSS idle (10 s after its start, 100 instances available, no request since), with
   `api.metrics` true and false, alternating, restarting the service each time.

Run as root: .venv/bin/python -m bench.bench_metrics [--rounds 3] [--duration 8] [--scrapes 1000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_api_load import WrkResult, wrk
from bench.deployed import Api, cpu_count, deployed, load_average, main_pid, vm_rss_kib
from tests.deploy.guest import UNIT, VENV, ProvisionerDeployment
from tests.testhost.harness import TestHost

INSTANCES = 100
ACTIVE = "/srv/services/active/"
GOAL_RATIO = 0.95
GOAL_RSS_MB = 3.0
DOCS = "  - name: docs\n    type: source-files\n    environment: {DIRECTORY: /srv/docs}\n"
FAKES = Path(__file__).resolve().parents[1] / "tests" / "resources" / "fakes"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- 1. In-process ---------------------------------------------------------------------------------------

IN_PROCESS_SETTINGS = """\
services:
  - name: llm
    image: localhost/llm
    varieties:
      nvidia: {resources: {vram_gb: 1}}
    profiles:
      small: {environment: {SIZE: small}}
"""


def in_process(scrapes: int) -> tuple[float, float, float, int]:
    """(first, p50, p99) seconds of the scrape function, and the body's size."""
    sys.path.insert(0, str(FAKES))
    from ozwald_fake_pynvml import FakeNvidiaGpu, FakeNvml, GiB

    from ozwald.api.app import RequestCounts
    from ozwald.api.metrics import exposition
    from ozwald.records import ActiveService, DesiredInstance
    from ozwald.resources import HostResourceMonitor
    from ozwald.resources.nvidia import NvidiaBackend
    from ozwald.state import ProfileResult, ProfileResults
    from ozwald.state.redis_conn import connect
    from tests.support.provisioner_kit import make_provisioner
    from tests.support.redis_server import RedisServer, redis_server_binary

    class Sampler:
        load_percent = 5.0

        def start(self) -> None: ...

        def stop(self) -> None: ...

    with tempfile.TemporaryDirectory(prefix="ozbench-metrics-") as tmp:
        redis = RedisServer(redis_server_binary(), Path(tmp))
        redis.start()
        client = connect(redis.params())
        try:
            provisioner, reconciler = make_provisioner(IN_PROCESS_SETTINGS, client, Path(tmp))
            nvml = FakeNvml([FakeNvidiaGpu(uuid=f"GPU-{i}0000000-1111-2222-3333-444444444444",
                                           bus_id=f"00000000:0{i + 1}:00.0") for i in range(2)])
            provisioner.resources = HostResourceMonitor(
                backends=(NvidiaBackend(loader=nvml.module, describe_pci=lambda bus: None),),
                cpu_sampler=Sampler(), memory=lambda: (256 * GiB, 200 * GiB), cpu_count=64)  # type: ignore[arg-type]
            provisioner.results = ProfileResults(client, "test")
            now = datetime.now(UTC)
            provisioner.results.record(ProfileResult(
                service="llm", variety="nvidia", profile="small", spec_hash="x", outcome="measured", started_at=now,
                finished_at=now, ready_s=2.0, ram_peak_mib=900.0, vram_peak_mib={"nvidia:0": 800.0}))
            provisioner.desired.replace([DesiredInstance(name=f"llm{i}", service="llm", variety="nvidia",
                                                         profile="small") for i in range(INSTANCES)])
            provisioner.start()

            def statuses(state: str) -> list[ActiveService]:
                return [ActiveService(name=f"llm{i}", service="llm", variety="nvidia", profile="small",
                                      status=state, info={"generation": 1, "restarts": i % 3})  # type: ignore[arg-type]
                        for i in range(INSTANCES)]

            reconciler.publish(statuses("starting"))
            reconciler.publish(statuses("available"))
            counts = RequestCounts()
            for route in ("/srv/services/active/", "/metrics", "/health"):
                counts.add("GET", route, 200)
            scrape = exposition(provisioner, counts, lambda: 0, 6)
            started = time.perf_counter()
            body, _ = scrape()
            first = time.perf_counter() - started
            times = []
            for _ in range(scrapes):
                started = time.perf_counter()
                scrape()
                times.append(time.perf_counter() - started)
            provisioner.stop()
            return first, percentile(times, 0.5), percentile(times, 0.99), len(body)
        finally:
            client.close()
            redis.stop()


# -- 2-4. The deployed provisioner -------------------------------------------------------------------------


def fake_gpus(host: TestHost) -> None:
    from tests.integration.test_gpu_admission import SHIM, cdi_spec

    site = next(host.guest_path(f"{VENV}/lib").glob("python3*/site-packages"))
    (site / "ozwald_fake_pynvml.py").write_text((FAKES / "ozwald_fake_pynvml.py").read_text())
    (site / "pynvml.py").write_text(SHIM)
    host.write_file("/etc/cdi/test-nvidia.json", cdi_spec())


def set_metrics(ozwald: ProvisionerDeployment, on: bool) -> None:
    config = ozwald.default_config(DOCS)
    if not on:
        config = config.replace(f"    host: {ozwald.host.name}\n",
                                f"    host: {ozwald.host.name}\n    api: {{metrics: false}}\n", 1)
    ozwald.write_config(config)


def restart_idle(host: TestHost, ozwald: ProvisionerDeployment, api: Api, settle: float) -> int:
    """Restart ozwald.service, wait until every instance is available, leave it idle; its VmRSS in KiB."""
    api.close()
    host.systemctl("restart", UNIT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status, body = api.json("GET", ACTIVE)
        except OSError:
            status, body = 0, []
        if status == 200 and len(body) == INSTANCES and all(s["status"] == "available" for s in body):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("the instances did not come back after the restart")
    api.close()
    time.sleep(settle)  # idle: no request, the reconciler's loop turning
    return vm_rss_kib(host, main_pid(host, UNIT)) or 0


class Scraper:
    """GET /metrics every second on one keep-alive connection, as Prometheus does."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _ = self.api.raw("GET", "/metrics")
            assert status == 200
            self.scrapes += 1
            self._stop.wait(1.0)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.api.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--scrapes", type=int, default=1000, help="in-process scrapes timed")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before reading the RSS")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    print(f"# {cpu_count()} CPUs; load average before: {load_average()}", flush=True)

    first, p50, p99, size = in_process(args.scrapes)
    print(f"in-process scrape, {INSTANCES} instances ({size} bytes): first {first * 1000:.2f} ms, "
          f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms over {args.scrapes}", flush=True)

    rss: dict[bool, list[int]] = {True: [], False: []}
    http: list[WrkResult] = []
    active: dict[bool, list[WrkResult]] = {True: [], False: []}
    sample = ""
    with deployed(DOCS) as (host, ozwald):
        fake_gpus(host)
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        status, body = api.json("POST", "/srv/services/active/update/",
                                [{"name": f"docs{i}", "service": "docs"} for i in range(INSTANCES)])
        assert status == 202, body
        for round_no in range(args.rounds):
            for on in ((True, False) if round_no % 2 == 0 else (False, True)):
                set_metrics(ozwald, on)
                rss[on].append(restart_idle(host, ozwald, api, args.settle))
                print(f"  round {round_no + 1} metrics {'on ' if on else 'off'}: idle VmRSS "
                      f"{rss[on][-1] / 1024:.1f} MB", flush=True)
                if not on:
                    continue
                if not sample:
                    sample = api.raw("GET", "/metrics")[1].decode()
                    api.close()
                http.append(wrk(ozwald.url("/metrics"), ozwald.system_key, 1, args.duration / 2))
                print(f"  round {round_no + 1} GET /metrics c=1: {http[-1].rps:.0f} req/s, "
                      f"p50 {http[-1].p50 * 1000:.2f} ms, p99 {http[-1].p99 * 1000:.2f} ms", flush=True)
                for scraped in ((False, True) if round_no % 2 == 0 else (True, False)):
                    if scraped:
                        with Scraper(Api(host.ip, ozwald.api_port, ozwald.system_key)) as scraper:
                            result = wrk(ozwald.url(ACTIVE), ozwald.system_key, 8, args.duration)
                        note = f" ({scraper.scrapes} scrapes)"
                    else:
                        result, note = wrk(ozwald.url(ACTIVE), ozwald.system_key, 8, args.duration), ""
                    active[scraped].append(result)
                    print(f"  round {round_no + 1} GET active c=8 {'with' if scraped else 'without'} a scraper: "
                          f"{result.rps:.0f} req/s, p99 {result.p99 * 1000:.2f} ms{note}", flush=True)
        api.close()
    print(f"\n# load average after: {load_average()}")
    out = Path(tempfile.gettempdir()) / "ozbench-metrics-sample.txt"
    out.write_text(sample)
    print(f"# a scrape of the deployed provisioner is in {out}")
    summary(first, p50, p99, http, active, rss)


def summary(first: float, p50: float, p99: float, http: list[WrkResult], active: dict[bool, list[WrkResult]],
            rss: dict[bool, list[int]]) -> None:
    med: Any = statistics.median
    print(f"\n== A scrape with {INSTANCES} instances")
    print(f"  in-process: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (first {first * 1000:.2f} ms)")
    print(f"  over HTTP (wrk c=1, medians of {len(http)}): p50 {med([r.p50 for r in http]) * 1000:.2f} ms, "
          f"p99 {med([r.p99 for r in http]) * 1000:.2f} ms, {med([r.rps for r in http]):.0f} scrapes/s")
    without, with_ = med([r.rps for r in active[False]]), med([r.rps for r in active[True]])
    ratio = with_ / without
    print(f"\n== GET {ACTIVE} ({INSTANCES} instances, wrk c=8), medians of {len(active[True])}")
    print(f"  without a scraper {without:.0f} req/s, with one every second {with_:.0f} req/s: {ratio:.3f}x "
          f"(goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'MISSED'})")
    on, off = med(rss[True]) / 1024, med(rss[False]) / 1024
    print(f"\n== ozwald serve idle VmRSS, medians of {len(rss[True])}")
    print(f"  metrics on {on:.1f} MB, off {off:.1f} MB: +{on - off:.1f} MB "
          f"(goal <= +{GOAL_RSS_MB:g} MB: {'met' if on - off <= GOAL_RSS_MB else 'MISSED'})")


if __name__ == "__main__":
    main()
