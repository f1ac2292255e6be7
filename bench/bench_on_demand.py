# SPDX-License-Identifier: AGPL-3.0-or-later
"""On-demand services (issue 18): served from idle, the proxy's cost, the idle stop and the truth of the statuses,
each against a floor measured side by side in the same run.

Ozwald runs as ozwald.service in a booted test host. `od` is the test server with a health check (`probe:
python3`, interval 1 s) that takes 3 s to become healthy (`START_DELAY_S=3`), on demand with `idle_stop: 2s`;
its socket listens on the guest's port 8090, its container publishes 127.0.0.1:18090. `od-floor` is the same
service without `on_demand`, publishing 8091: it is never desired, Ozwald only renders it (`ozwald render` in
the guest), and this script runs it under the name `ozbench-od` so that the reconciler never sees it.

a) served from idle: cycles alternate the two paths (the order flips every cycle):
   - on demand: wait until `od` is `idle` and its container unit inactive, then one request to the socket,
     timed to its first byte (t0: before connect); every third cycle a second request is sent the moment the
     API says `stopping` (it must be held and served by the next start);
   - floor: StartUnit of `ozbench-od.service` over the guest's bus (the job ends once the unit is active, i.e.
     healthy), then the same request to its port, timed from before the StartUnit; then it is stopped.
   Every request that is refused, reset, closed or not answered 200 counts as failed.
b) the proxy's cost on a warm instance: woken by the API, then a Python loop inside the guest (Ozwald's venv)
   sends `GET /health` alternately through the socket (127.0.0.1:8090: socket, systemd-socket-proxyd) and
   straight to the container's backend port (127.0.0.1:18090), with a new connection per request and over one
   kept-alive connection per path.
c) the idle stop: the container unit's InactiveEnterTimestamp (the guest shares CLOCK_MONOTONIC) minus the end
   of the last request, against idle_stop; at the end `podman ps` must list no container of `od`.
d) truth: a thread reads the container unit's state over D-Bus, GET /srv/services/active/, and the unit again,
   every ~50 ms through all the cycles: `available` while the unit is not active in both reads, or `idle` while
   it is activating/active/deactivating in both reads, is a violation.

The GPU swap between on-demand instances that do not fit together is measured by bench_gpu_swap.py.

Run as root:

    .venv/bin/python -m bench.bench_on_demand [--cycles 50] [--proxy-requests 1000]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.deployed import TESTSERVER, Api, deployed, load_average, monotonic_props
from ozwald.quadlet.naming import container_name
from ozwald.systemd import SystemdClient
from tests.testhost.harness import TestHost

NAME = "od"
UNIT = f"ozwald-{NAME}.service"
FLOOR = "ozbench-od"
PUBLIC, BACKEND, FLOOR_PORT = 8090, 18090, 8091
IDLE_STOP_S = 2.0
GOAL_TTFB_ADDED_S = 0.100
GOAL_PROXY_RATIO = 1.2
GOAL_IDLE_SLACK_S = 2.0
ACTIVE = "/srv/services/active/"
RUNTIME_DIR = "/run/containers/systemd"
RUNS = ("activating", "active", "deactivating", "reloading")
SERVICE = (f"    image: {TESTSERVER}\n    restart: \"no\"\n"
           "    health: {http: \"http://127.0.0.1:8000/health\", probe: python3, interval: 1s, timeout: 2s}\n"
           "    environment: {START_DELAY_S: \"3\"}\n")
SERVICES = (f"  - name: {NAME}\n    ports: [\"{PUBLIC}:8000\"]\n    on_demand: {{idle_stop: {IDLE_STOP_S:g}s}}\n"
            + SERVICE + f"  - name: od-floor\n    ports: [\"{FLOOR_PORT}:8000\"]\n" + SERVICE)
REQUEST = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


@dataclass
class Served:
    t0: float
    first: float | None  # first byte of the answer
    end: float
    outcome: str  # "ok", or what went wrong

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def request(ip: str, port: int, t0: float | None = None, timeout: float = 60.0) -> Served:
    """One `GET /health` on a new connection, timed from `t0` (default: before the connect) to its first byte."""
    start = time.monotonic() if t0 is None else t0
    first = None
    try:
        with socket.create_connection((ip, port), timeout=timeout) as conn:
            conn.sendall(REQUEST)
            data = conn.recv(65536)
            first = time.monotonic()
            while chunk := conn.recv(65536):
                data += chunk
    except OSError as exc:
        return Served(start, first, time.monotonic(), f"{type(exc).__name__}: {exc}")
    end = time.monotonic()
    if not data:
        return Served(start, None, end, "closed without an answer")
    status_line = data.split(b"\r\n", 1)[0]
    return Served(start, first, end, "ok" if status_line.split()[1:2] == [b"200"] else status_line.decode())


def wait_active(api: Api, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 90.0
                ) -> dict[str, dict[str, Any]]:
    """Blocking queries on GET active until `check(the items by name)` holds; those items."""
    api.json("GET", ACTIVE)
    revision = api.last_headers["x-ozwald-revision"]
    deadline = time.monotonic() + timeout
    while True:
        status, items = api.json("GET", f"{ACTIVE}?after={revision}&wait=5")
        revision = api.last_headers.get("x-ozwald-revision", revision)
        by_name = {i["name"]: dict(i) for i in items} if status == 200 else {}
        if check(by_name):
            return by_name
        if time.monotonic() > deadline:
            raise TimeoutError(f"last seen {by_name}")


def wait_status(api: Api, check: Callable[[dict[str, Any] | None], bool], timeout: float = 90.0) -> dict[str, Any]:
    """Blocking queries on GET active until `check(od's item)` holds; that item."""
    return wait_active(api, lambda items: NAME in items and check(items[NAME]), timeout)[NAME]


def first_bytes(served: list[Served]) -> list[float]:
    """Seconds to the first byte of the requests answered 200."""
    return [s.first - s.t0 for s in served if s.ok and s.first]


def first_byte_row(what: str, ours: list[float], base: list[float], goal_added_s: float) -> str:
    """The report's row of a first byte against its floor: medians (p90) and whether the goal is met."""
    om, bm = statistics.median(ours), statistics.median(base)
    return (f"| {what}, median (p90) | {ms(om)} ({ms(pct(ours, 0.9))}) | {ms(bm)} ({ms(pct(base, 0.9))}) | "
            f"≤ floor + {goal_added_s * 1000:g} ms: added {ms(om - bm)} | {met(om - bm <= goal_added_s)} |")


def is_status(*wanted: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda item: item is not None and item["status"] in wanted


@dataclass
class Truth:
    """Samples the API against systemd in a thread (d)."""

    ip: str
    port: int
    key: str
    bus: str
    interval: float = 0.05
    samples: int = 0
    said: dict[str, int] = field(default_factory=dict)
    available_down: list[str] = field(default_factory=list)
    idle_running: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sequence: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="truth", daemon=True)

    def __enter__(self) -> Truth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        api = Api(self.ip, self.port, self.key)
        client = SystemdClient(self.bus)
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    first = client.unit_state(UNIT)
                    asked = time.time()
                    _, items = api.json("GET", ACTIVE)
                    after = client.unit_state(UNIT).active_state
                    before = first.active_state
                except Exception as exc:  # the check itself broke: reported, and the run is not clean
                    self.errors.append(repr(exc))
                    self._stop.wait(0.5)
                    continue
                item = next((i for i in items if i["name"] == NAME), None)
                if item is not None:
                    said = item["status"]
                    self.samples += 1
                    self.said[said] = self.said.get(said, 0) + 1
                    if not self.sequence or self.sequence[-1] != said:
                        self.sequence.append(said)
                    # how long the unit had been in its state when the API was asked: the publish's lag
                    lag = asked - first.state_change_usec / 1e6
                    at = (f"t={time.monotonic() - t0:.2f}s: API said {said} while the unit was {before} -> {after}, "
                          f"asked {lag * 1000:.0f} ms after the unit became {before}")
                    if said == "available" and before != "active" and after != "active":
                        self.available_down.append(at)
                    if said == "idle" and before in RUNS and after in RUNS:
                        self.idle_running.append(at)
                self._stop.wait(self.interval)
        finally:
            api.close()
            client.close()


PROXY_LOOP = r"""
import http.client, json, sys, time
n = int(sys.argv[1])
ports = {"proxy": int(sys.argv[2]), "direct": int(sys.argv[3])}
def new_connection(port):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    body = conn.getresponse()
    body.read()
    assert body.status == 200, body.status
    conn.close()
    return time.perf_counter() - t0
kept = {path: http.client.HTTPConnection("127.0.0.1", port, timeout=10) for path, port in ports.items()}
def keep_alive(port, path):
    t0 = time.perf_counter()
    kept[path].request("GET", "/health")
    body = kept[path].getresponse()
    body.read()
    assert body.status == 200, body.status
    return time.perf_counter() - t0
out = {"new": {"proxy": [], "direct": []}, "kept": {"proxy": [], "direct": []}}
for i in range(n + 50):
    order = ("proxy", "direct") if i % 2 == 0 else ("direct", "proxy")
    for path in order:
        a = new_connection(ports[path])
        b = keep_alive(ports[path], path)
        if i >= 50:  # the first 50 are a warm-up
            out["new"][path].append(a)
            out["kept"][path].append(b)
print(json.dumps(out))
"""


def proxy_cost(host: TestHost, api: Api, n: int) -> dict[str, dict[str, list[float]]]:
    status, body = api.json("POST", f"{ACTIVE}{NAME}/wake?wait=60")
    if status != 200:
        raise RuntimeError(f"wake: {status} {body}")
    wait_status(api, is_status("available"))
    out = host.exec(["/opt/ozwald/venv/bin/python", "-c", PROXY_LOOP, str(n), str(PUBLIC), str(BACKEND)],
                    timeout=300, check=True)
    result: dict[str, dict[str, list[float]]] = json.loads(out.stdout)
    return result


def phases(host: TestHost, unit: str, served: Served) -> dict[str, float]:
    """Where a first byte's time went, from the container unit's own timestamps (CLOCK_MONOTONIC is shared with
    the guest): `pre` until its start begins, `start` until it is active, `post` until the first byte."""
    ts = monotonic_props(host, unit, "InactiveExitTimestamp", "ActiveEnterTimestamp")
    up, active = ts["InactiveExitTimestamp"], ts["ActiveEnterTimestamp"]
    return {"pre": up - served.t0, "start": active - up, "post": (served.first or served.end) - active}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--proxy-requests", type=int, default=1000, help="per path and variant, in (b)")
    args = parser.parse_args()
    print(f"# load average before: {load_average()}", flush=True)
    with deployed(SERVICES) as (host, ozwald):
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        client = SystemdClient(host.bus_address)
        version = host.exec(["podman", "--version"], check=True).stdout.split()[-1]  # "podman version 5.4.2"
        rendered = ozwald.ozwald("render", "od-floor", "--podman-version", ".".join(version.split(".")[:2]))
        if rendered.returncode != 0:
            raise RuntimeError(f"ozwald render od-floor: {rendered.stderr}")
        host.write_file(f"{RUNTIME_DIR}/{FLOOR}.container", rendered.stdout.replace("ozwald-od-floor", FLOOR))
        client.reload()
        try:
            status, body = api.json("POST", "/srv/services/active/update/", [{"name": NAME}])
            if status != 202:
                raise RuntimeError(f"update refused: {status} {body}")
            wait_status(api, is_status("idle"))
            # one start of each path first, not counted (page cache, Podman's storage, Python's bytecode)
            request(host.ip, PUBLIC)
            client.start_unit(f"{FLOOR}.service", timeout=120)
            request(host.ip, FLOOR_PORT)
            client.stop_unit(f"{FLOOR}.service", timeout=120)
            ours: list[Served] = []
            floor: list[Served] = []
            held: list[tuple[Served, bool]] = []  # a request sent while stopping, and whether it really was
            idle_stops: list[float] = []
            starts: list[float] = []
            split: dict[str, list[dict[str, float]]] = {"ondemand": [], "floor": []}
            began = time.monotonic()
            with Truth(host.ip, ozwald.api_port, ozwald.system_key, host.bus_address) as truth:
                for cycle in range(args.cycles):
                    for path in (("ondemand", "floor") if cycle % 2 == 0 else ("floor", "ondemand")):
                        if path == "floor":
                            t0 = time.monotonic()
                            client.start_unit(f"{FLOOR}.service", timeout=120)
                            floor.append(request(host.ip, FLOOR_PORT, t0=t0))
                            split["floor"].append(phases(host, f"{FLOOR}.service", floor[-1]))
                            client.stop_unit(f"{FLOOR}.service", timeout=120)
                            continue
                        wait_status(api, is_status("idle"))
                        client.wait_for(UNIT, lambda s: s.active_state == "inactive", timeout=60)
                        starts.append(time.monotonic())
                        served = request(host.ip, PUBLIC)
                        ours.append(served)
                        split["ondemand"].append(phases(host, UNIT, served))
                        last = served
                        if cycle % 3 == 1:
                            # `idle` too: a stop quicker than one blocking query's round trip is not missed
                            wait_status(api, is_status("stopping", "idle"))
                            starts.append(time.monotonic())
                            during = request(host.ip, PUBLIC)
                            ts = monotonic_props(host, UNIT, "ActiveExitTimestamp", "InactiveEnterTimestamp")
                            # the stop the request came in: began before it was sent, ended after
                            was = ts["ActiveExitTimestamp"] <= during.t0 < ts["InactiveEnterTimestamp"]
                            held.append((during, was))
                            last = during
                        client.wait_for(UNIT, lambda s: s.active_state == "inactive", timeout=60)
                        down = monotonic_props(host, UNIT, "InactiveEnterTimestamp")["InactiveEnterTimestamp"]
                        idle_stops.append(down - last.end)
                    o, f = ours[-1], floor[-1]
                    print(f"  cycle {cycle + 1}: on demand {o.outcome} ttfb "
                          f"{ms(o.first - o.t0) if o.first else '-'}, floor {f.outcome} ttfb "
                          f"{ms(f.first - f.t0) if f.first else '-'}, idle stop {idle_stops[-1]:.2f} s"
                          + (f"; held during stop: {held[-1][0].outcome} "
                             f"({'in the stop' if held[-1][1] else 'after it'})" if cycle % 3 == 1 else ""),
                          flush=True)
                wait_status(api, is_status("idle"))
                elapsed = time.monotonic() - began
            names = host.exec(["podman", "ps", "--format", "{{.Names}}"], check=True).stdout.split()
            left = [n for n in names if n == container_name(NAME)]
            unit_result = client.unit_state(UNIT).result
            proxy = proxy_cost(host, api, args.proxy_requests)
        finally:
            client.stop_unit(f"{FLOOR}.service", timeout=120)
            host.guest_path(f"{RUNTIME_DIR}/{FLOOR}.container").unlink(missing_ok=True)
            client.reload()
            api.json("POST", "/srv/services/active/update/", [])
            api.close()
            client.close()
    report(args, ours, floor, split, held, idle_stops, starts, elapsed, truth, left, unit_result, proxy)
    print(f"\n# load average after: {load_average()}")


def report(args: argparse.Namespace, ours: list[Served], floor: list[Served],
           split: dict[str, list[dict[str, float]]], held: list[tuple[Served, bool]],
           idle_stops: list[float], starts: list[float], elapsed: float, truth: Truth, left: list[str],
           unit_result: str, proxy: dict[str, dict[str, list[float]]]) -> None:
    ttfb, base = first_bytes(ours), first_bytes(floor)
    failed = [s.outcome for s in ours + [h for h, _ in held] if not s.ok]
    floor_failed = [s.outcome for s in floor if not s.ok]
    window = max(sum(1 for t in starts if s <= t < s + 300) for s in starts) if starts else 0
    print(f"\n== {args.cycles} cycles in {elapsed:.0f} s; {len(starts)} starts on demand (at most {window} within "
          f"5 minutes); the container unit's last result: {unit_result or '-'}")
    print("| what | on demand | floor | goal | |")
    print("|---|---|---|---|---|")
    if ttfb and base:
        print(first_byte_row("a) first byte from idle", ttfb, base, GOAL_TTFB_ADDED_S))
    print(f"| a) requests refused/reset/failed | {len(failed)} of {len(ours) + len(held)} "
          f"({sum(w for _, w in held)} of {len(held)} sent during a stop) | {len(floor_failed)} of {len(floor)} | 0 "
          f"| {met(not failed)} |")
    for phase, what in (("pre", "request or StartUnit → the container's start begins"),
                        ("start", "→ the unit active (healthy)"),
                        ("post", "→ the answer's first byte")):
        print(f"| a) median {phase}: {what} | {ms(statistics.median(p[phase] for p in split['ondemand']))} | "
              f"{ms(statistics.median(p[phase] for p in split['floor']))} | | |")
    heldt = [h.first - h.t0 for h, _ in held if h.ok and h.first]
    if heldt:
        print(f"| a) first byte of a request sent during the stop, median | {ms(statistics.median(heldt))} | | | |")
    print(f"| c) idle stop after the last request, median (max) | {statistics.median(idle_stops):.2f} s "
          f"({max(idle_stops):.2f} s) | idle_stop {IDLE_STOP_S:g} s | ≤ {IDLE_STOP_S + GOAL_IDLE_SLACK_S:g} s "
          f"| {met(max(idle_stops) <= IDLE_STOP_S + GOAL_IDLE_SLACK_S)} |")
    print(f"| c) containers of `{NAME}` running when idle | {len(left)} | | 0 | {met(not left)} |")
    for variant, label in (("new", "a new connection per request"), ("kept", "one kept-alive connection")):
        p, d = proxy[variant]["proxy"], proxy[variant]["direct"]
        ratio = statistics.median(p) / statistics.median(d)
        print(f"| b) warm `GET /health`, {label}, p50 (p99), {len(p)} each | {ms(statistics.median(p))} "
              f"({ms(pct(p, 0.99))}) | direct {ms(statistics.median(d))} ({ms(pct(d, 0.99))}) | p50 ≤ 1.2x: "
              f"{ratio:.2f}x, p99 {pct(p, 0.99) / pct(d, 0.99):.2f}x | {met(ratio <= GOAL_PROXY_RATIO)} |")
    print(f"| d) truth: `available` while the unit is down / `idle` while it runs | {len(truth.available_down)} / "
          f"{len(truth.idle_running)} in {truth.samples} samples {truth.said} | | 0 / 0 | "
          f"{met(not truth.available_down and not truth.idle_running and not truth.errors)} |")
    for line in (truth.available_down + truth.idle_running)[:10] + truth.errors[:3]:
        print(f"  {line}")
    print(f"  statuses seen (first 30 changes): {' -> '.join(truth.sequence[:30])}")
    if failed or floor_failed:
        print(f"  failures: {failed[:10]} floor: {floor_failed[:10]}")
    print(f"  on demand ttfb {[round(x, 3) for x in ttfb]}")
    print(f"  floor ttfb     {[round(x, 3) for x in base]}")
    print(f"  idle stops     {[round(x, 2) for x in idle_stops]}")


if __name__ == "__main__":
    main()
