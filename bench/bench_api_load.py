# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /srv/services/active/ under load, against the floor of the same stack, side by side.

Ozwald runs as ozwald.service in a booted test host (the integration tests' deployment) with 10
instances active (the test server, no health check). The floor is bench/floor_app.py: Bottle + Waitress
(8 threads, like Ozwald) that checks the bearer token with hmac.compare_digest and answers the same JSON,
read from Redis (a key holding Ozwald's own answer, captured first). It runs INSIDE the guest with
Ozwald's venv (/opt/ozwald/venv/bin/python), as a transient unit, on port 8001. The goals are against it.
For information a second copy, `floor-mem` (port 8002), reads the document once and serves it from memory,
as Ozwald serves its statuses: the floor of Bottle + Waitress alone.

wrk runs on this machine against the guest's IP, at 1 connection (`-t1 -c1`) and at 32 (`-t2 -c32`),
the three servers one after the other, in an order that flips every round. Reported: medians over the rounds
of req/s, p50 and p99; and the VmRSS of each server's main process (from the guest's /proc) before,
during (sampled every 0.2 s while wrk runs; the maximum) and after the load.

wrk, the guest's servers, Redis and the test host all share this machine's cores.

Run as root: .venv/bin/python -m bench.bench_api_load [--rounds 3] [--duration 8] [--connections 1 32]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.deployed import TESTSERVER, Api, cpu_count, deployed, load_average, main_pid, vm_rss_kib
from tests.deploy.guest import UNIT, VENV, ProvisionerDeployment
from tests.testhost.harness import TestHost

INSTANCES = 10
ACTIVE = "/srv/services/active/"
FLOORS = {"floor": ("ozbench-floor.service", 8001, "0"), "floor-mem": ("ozbench-floor-mem.service", 8002, "1")}
FLOOR_GUEST = "/usr/local/lib/ozbench/floor_app.py"
REDIS_KEY = "ozbench:active"
SERVICES = f"  - name: fleet\n    image: {TESTSERVER}\n"
GOAL_THROUGHPUT = 0.8  # Ozwald's req/s at least this share of the floor's
GOAL_P99 = 1.25  # Ozwald's p99 at most this multiple of the floor's
GOAL_RSS_MB = 60.0


@dataclass
class WrkResult:
    rps: float
    p50: float  # seconds
    p99: float
    requests: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, key: str, connections: int, duration: float) -> WrkResult:
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "-H", f"Authorization: Bearer {key}", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (p50 and p99 and rps and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(float(rps.group(1)), _seconds(p50.group(1)), _seconds(p99.group(1)), int(total.group(1)))


class RssSampler:
    """The largest VmRSS of a guest process while the block runs (sampled every `interval` seconds)."""

    def __init__(self, host: TestHost, pid: int, interval: float = 0.2) -> None:
        self.host, self.pid, self.interval = host, pid, interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, vm_rss_kib(self.host, self.pid) or 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- Setting up --------------------------------------------------------------------------------------------

def activate_fleet(api: Api, timeout: float = 180.0) -> None:
    """Until every instance is available with its container id and no status changed for 2 s."""
    items = [{"name": f"fleet{i}", "service": "fleet"} for i in range(INSTANCES)]
    status, body = api.json("POST", "/srv/services/active/update/", items)
    if status != 202:
        raise RuntimeError(f"update refused: {status} {body}")
    deadline = time.monotonic() + timeout
    status, active = api.json("GET", ACTIVE)
    while True:
        revision = api.last_headers.get("x-ozwald-revision", "0")
        states = {i["name"]: i["status"] for i in active} if status == 200 else {}
        settled = len(states) == INSTANCES and set(states.values()) == {"available"} and all(
            i["info"].get("container_id") for i in active)
        status, active = api.json("GET", f"{ACTIVE}?after={revision}&wait={2 if settled else 10}")
        if settled and api.last_headers.get("x-ozwald-revision") == revision:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the fleet is not available after {timeout} s: {states}")


def store_answer(host: TestHost, ozwald: ProvisionerDeployment, body: bytes) -> None:
    """Ozwald's answer into the guest's Redis, for the floors."""
    stored = host.exec(["env", f"REDISCLI_AUTH={ozwald.redis_password}", "redis-cli", "-h", "127.0.0.1",
                        "-x", "SET", REDIS_KEY], input=body.decode(), timeout=30)
    if stored.stdout.strip() != "OK":
        raise RuntimeError(f"redis-cli SET failed: {stored.stdout}{stored.stderr}")


def start_floor(host: TestHost, ozwald: ProvisionerDeployment, name: str, body: bytes) -> int:
    """Start floor_app.py in the guest, check it answers Ozwald's bytes; returns its pid (guest)."""
    unit, port, memory = FLOORS[name]
    env_file = f"/run/{unit}.env"
    host.write_file(FLOOR_GUEST, (Path(__file__).parent / "floor_app.py").read_text())
    host.write_file(env_file, f"FLOOR_KEY={ozwald.system_key}\nFLOOR_REDIS_PASSWORD={ozwald.redis_password}\n"
                              f"FLOOR_PORT={port}\nFLOOR_REDIS_KEY={REDIS_KEY}\nFLOOR_MEMORY={memory}\n", mode=0o600)
    host.exec(["systemd-run", f"--unit={unit}", "--collect", "--quiet", f"--property=EnvironmentFile={env_file}",
               "--", f"{VENV}/bin/python", FLOOR_GUEST], check=True)
    floor = Api(host.ip, port, ozwald.system_key)
    deadline = time.monotonic() + 30
    while True:
        try:
            status, answer = floor.raw("GET", ACTIVE)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} does not answer:\n{host.journal(unit, lines=40)}") from None
            time.sleep(0.1)
    floor.close()
    if status != 200 or answer != body:
        raise RuntimeError(f"{name} answers {status} {answer[:200]!r}, not Ozwald's {body[:200]!r}")
    return main_pid(host, unit)


# -- Report ------------------------------------------------------------------------------------------------

def mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    print(f"# {cpu_count()} CPUs; load average before: {load_average()}", flush=True)
    with deployed(SERVICES) as (host, ozwald):
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        oz_pid = main_pid(host, UNIT)
        rss_idle = vm_rss_kib(host, oz_pid)
        activate_fleet(api)
        status, body = api.raw("GET", ACTIVE)
        assert status == 200, body
        api.close()
        store_answer(host, ozwald, body)
        servers = {"ozwald": (ozwald.url(ACTIVE), oz_pid)}
        for name, (_, port, _) in FLOORS.items():
            servers[name] = (host.url(port, ACTIVE), start_floor(host, ozwald, name, body))
        print(f"# {INSTANCES} instances available; answer {len(body)} bytes; pids (guest) "
              f"{ {name: pid for name, (_, pid) in servers.items()} }", flush=True)
        rss_before = {name: vm_rss_kib(host, pid) for name, (_, pid) in servers.items()}
        for url, _ in servers.values():  # warm-up, not counted
            wrk(url, ozwald.system_key, 32, 2)
        results: dict[tuple[str, int], list[WrkResult]] = {}
        peaks = dict.fromkeys(servers, 0)
        for round_no in range(args.rounds):
            for connections in args.connections:
                order = ["floor", "ozwald", "floor-mem"] if round_no % 2 == 0 else ["floor-mem", "ozwald", "floor"]
                for name in order:
                    url, pid = servers[name]
                    with RssSampler(host, pid) as sampler:
                        result = wrk(url, ozwald.system_key, connections, args.duration)
                    peaks[name] = max(peaks[name], sampler.peak_kib)
                    results.setdefault((name, connections), []).append(result)
                    print(f"  round {round_no + 1} c={connections:<3} {name:<9} {result.rps:8.0f} req/s  "
                          f"p50 {result.p50 * 1000:6.2f} ms  p99 {result.p99 * 1000:6.2f} ms", flush=True)
        time.sleep(2)
        rss_after = {name: vm_rss_kib(host, pid) for name, (_, pid) in servers.items()}
        status, final = Api(host.ip, ozwald.api_port, ozwald.system_key).raw("GET", ACTIVE)
        unchanged = status == 200 and final == body
        host.exec(["systemctl", "stop", *(unit for unit, _, _ in FLOORS.values())])
        print(f"\n# load average after: {load_average()}; Ozwald's answer unchanged by the load: {unchanged}")

    print(f"\n== GET {ACTIVE} with {INSTANCES} instances, medians of {args.rounds} x {args.duration:g} s")
    print(f"{'conns':>5}  {'server':<9} {'req/s':>8} {'p50':>9} {'p99':>9}")
    for connections in args.connections:
        med = {}
        for name in ("floor", "ozwald", "floor-mem"):
            runs = results[(name, connections)]
            med[name] = (statistics.median(r.rps for r in runs), statistics.median(r.p50 for r in runs),
                         statistics.median(r.p99 for r in runs))
            rps, p50, p99 = med[name]
            print(f"{connections:>5}  {name:<9} {rps:8.0f} {p50 * 1000:6.2f} ms {p99 * 1000:6.2f} ms")
        throughput = med["ozwald"][0] / med["floor"][0]
        p99_ratio = med["ozwald"][2] / med["floor"][2]
        ok_t, ok_p = throughput >= GOAL_THROUGHPUT, p99_ratio <= GOAL_P99
        print(f"{'':>5}  {'ozwald/floor':<12} {throughput:5.2f}x {'':>9} {p99_ratio:6.2f}x   "
              f"(goals: >= {GOAL_THROUGHPUT}x {'met' if ok_t else 'MISSED'}, "
              f"p99 <= {GOAL_P99}x {'met' if ok_p else 'MISSED'})")
        print(f"{'':>5}  {'ozwald/mem':<12} {med['ozwald'][0] / med['floor-mem'][0]:5.2f}x {'':>9} "
              f"{med['ozwald'][2] / med['floor-mem'][2]:6.2f}x   (information)")
    print(f"\n== VmRSS of the main process (goal for Ozwald < {GOAL_RSS_MB:g} MB)")
    print(f"  ozwald: idle (no instance) {mb(rss_idle)}, before load {mb(rss_before['ozwald'])}, "
          f"during (max) {mb(peaks['ozwald'])}, after {mb(rss_after['ozwald'])}")
    for name in FLOORS:
        print(f"  {name + ':':<10} before load {mb(rss_before[name])}, during (max) {mb(peaks[name])}, "
              f"after {mb(rss_after[name])}")
    worst = max(v for v in (rss_before["ozwald"], peaks["ozwald"], rss_after["ozwald"]) if v is not None)
    print(f"  Ozwald's largest {mb(worst)}: {'met' if worst / 1024 < GOAL_RSS_MB else 'MISSED'}")


if __name__ == "__main__":
    main()
