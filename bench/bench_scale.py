# SPDX-License-Identifier: AGPL-3.0-or-later
"""100 instances on one host (issue 12): start, stop, steady state, API, memory and adoption after kill -9.

Ozwald runs as ozwald.service in a booted test host (the integration tests' deployment). The instances are
busybox httpd containers (the busybox image baked into every test host, serving one file on port 8080):

    light         no health check, `min_uptime: 1s` (the unit's ExecStartPost gate: ready = up 1 s)
    light-health  health check `wget -q -O /dev/null http://127.0.0.1:8080/` every 60 s (Notify=healthy;
                  Podman runs the first check at once). Checked every 10 s, 100 instances meant ten
                  `podman healthcheck run` a second: two cores were saturated and the stops timed out.

Phases, all in the same run and the same test host:

1. **Up and down** (per variant, `--rounds` rounds after one warm-up, the order flipping every round):
   - ozwald: POST N instances, then blocking queries until all N are `available`; POST [], then until the
     list is empty (`api`) and until every file is gone and no ozwald-* unit is loaded (`clean`);
   - direct, in the guest, with the unit files Ozwald wrote (same text, named `ozbench-<instance>.container`
     so the reconciler never sees them), written before the clock starts:
     `systemctl daemon-reload && systemctl start <N units>`; then `systemctl stop <N units>` (`stop`), and
     `rm` + `systemctl daemon-reload` (`clean`). Timed inside the guest with `date +%s%N`.
2. **Idle** with N light instances: CPU seconds of `ozwald serve` (utime + stime from the guest's /proc) over
   `--idle` seconds, the periodic resync off (`resync_interval: 3600`).
3. **API**: GET /srv/services/active/ with N instances, wrk at 1 and 32 connections against Ozwald and against
   `floor-mem` (bench/floor_app.py serving Ozwald's own answer from memory: Bottle + Waitress alone), the
   order flipping every round; VmRSS of both while loaded.
4. **kill -9** of `ozwald serve` with N instances running: time to the first answer of GET active and to the
   first truthful one (all N `available`), and whether any instance was restarted (the InvocationID of every
   unit before and after).
5. **Resync**: the restarted process runs through bench/ozwald_trace.py (only a pass, the D-Bus calls and
   the publishing are traced) with `resync_interval: 10s`: CPU over `--idle` seconds, and per pass its time
   and D-Bus calls (counted on the reconciler thread between the pass's start and end).
6. **Blocking queries**: 4 clients wait on `?after=<revision>` while the N instances are removed and started
   again; each answer's arrival is compared with the end of the publish that made its revision (the trace;
   the guest shares CLOCK_MONOTONIC with this machine).

Run as root (takes about 5 minutes with the defaults on two cores):

    .venv/bin/python -m bench.bench_scale [--instances 100] [--rounds 2] [--variants light light-health]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import statistics
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_api_load import RssSampler, WrkResult, start_floor, store_answer, wrk
from bench.deployed import Api, cpu_count, deployed, load_average, main_pid, vm_rss_kib
from ozwald.quadlet.naming import instance_of_unit
from ozwald.systemd import SystemdClient
from tests.deploy.guest import UNIT, VENV, ProvisionerDeployment
from tests.testhost.harness import BUSYBOX_IMAGE, TestHost

ACTIVE = "/srv/services/active/"
UPDATE = "/srv/services/active/update/"
RUNTIME_DIR = "/run/containers/systemd"
TRACE_GUEST = "/usr/local/lib/ozbench/ozwald_trace.py"
TRACED = ",".join([
    "ozwald.provisioner.reconciler:Reconciler._pass",
    "ozwald.provisioner.reconciler:Reconciler._publish",
    "ozwald.provisioner.reconciler:Reconciler._container_ids_of",
    "ozwald.provisioner.reconciler:Reconciler._read_dirty",
    "ozwald.provisioner.core:Provisioner._publish",
    "ozwald.systemd.client:SystemdClient._call",
    "ozwald.systemd.client:SystemdClient._call_each",
])
HTTPD = json.dumps(["sh", "-c", "echo ok > /tmp/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp & wait"])
HEALTH = '{command: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/"], interval: 60s, timeout: 5s}'
SERVICES = (
    f"  - name: light\n    image: {BUSYBOX_IMAGE}\n    command: {HTTPD}\n    min_uptime: 1s\n"
    f"  - name: light-health\n    image: {BUSYBOX_IMAGE}\n    command: {HTTPD}\n    health: {HEALTH}\n"
)
GOAL_UP, GOAL_DOWN = 1.1, 1.1
GOAL_RPS, GOAL_P99 = 0.95, 1.1
GOAL_WAKE_S = 0.005
GOAL_RSS_IDLE_MB, GOAL_RSS_LOAD_MB = 45.0, 50.0


def with_resync(config: str, seconds: str) -> str:
    return config.replace("    cache:\n", f"    resync_interval: {seconds}\n    cache:\n", 1)


# -- Phase 1: up and down -----------------------------------------------------------------------------------

def names(variant: str, count: int) -> list[str]:
    return [f"{variant.replace('-', '')}{i}" for i in range(count)]


def wait_api(api: Api, done: object, timeout: float = 600.0) -> tuple[float, list[dict]]:  # type: ignore[type-arg]
    """Blocking queries until done(items) is true; (monotonic time of that answer, the items)."""
    status, items = api.json("GET", ACTIVE)
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if status == 200 and done(items):  # type: ignore[operator]
            return now, items
        failed = [i for i in items if i["status"] == "failed"] if status == 200 else []
        if failed:
            raise RuntimeError(f"{len(failed)} instance(s) failed, e.g. {failed[0]}")
        if now > deadline:
            raise TimeoutError(f"not done after {timeout} s: {status} {str(items)[:500]}")
        revision = api.last_headers.get("x-ozwald-revision", "0")
        status, items = api.json("GET", f"{ACTIVE}?after={revision}&wait=10")


def all_available(count: int) -> object:
    return lambda items: len(items) == count and all(i["status"] == "available" for i in items)


def ozwald_unloaded(host: TestHost, client: SystemdClient) -> bool:
    files = [p for p in host.guest_path(RUNTIME_DIR).iterdir() if p.name.startswith("ozwald-")]
    return not files and not [u for u in client.list_units("ozwald-*") if instance_of_unit(u.name) is not None]


@dataclass
class Round:
    up: float
    down_api: float  # ozwald: until GET active is empty; direct: `systemctl stop`
    down_clean: float  # ozwald: until the files are gone and the units unloaded; direct: stop + rm + reload


def ozwald_round(host: TestHost, api: Api, client: SystemdClient, variant: str, count: int) -> Round:
    items = [{"name": n, "service": variant} for n in names(variant, count)]
    api.json("GET", ACTIVE)
    t0 = time.monotonic()
    status, body = api.json("POST", UPDATE, items)
    if status != 202:
        raise RuntimeError(f"update refused: {status} {body}")
    t_up, _ = wait_api(api, all_available(count))
    t1 = time.monotonic()
    status, body = api.json("POST", UPDATE, [])
    if status != 202:
        raise RuntimeError(f"update [] refused: {status} {body}")
    t_api, _ = wait_api(api, lambda items: items == [])
    while not ozwald_unloaded(host, client):
        if time.monotonic() - t1 > 600:
            raise TimeoutError("Ozwald's units are still loaded after 600 s")
        time.sleep(0.02)
    t_clean = time.monotonic()
    time.sleep(1.0)  # the pass that removed them (and the one its own notification wakes) ends
    return Round(t_up - t0, t_api - t1, t_clean - t1)


def recover(host: TestHost, api: Api, client: SystemdClient) -> None:
    """After a failed phase: nothing desired, no direct unit left, so the next phase starts clean."""
    with contextlib.suppress(Exception):
        host.exec(["sh", "-c", f"systemctl stop 'ozbench-*'; rm -f {RUNTIME_DIR}/ozbench-*; systemctl daemon-reload;"
                               " systemctl reset-failed 'ozbench-*'"], timeout=600)
    with contextlib.suppress(Exception):
        api.json("POST", UPDATE, [])
        wait_api(api, lambda items: items == [], timeout=300)
        while not ozwald_unloaded(host, client):
            time.sleep(0.1)


def capture_units(host: TestHost, variant: str, count: int) -> dict[str, str]:
    """The unit files Ozwald wrote for the variant (call while they exist)."""
    return {n: host.read_file(f"{RUNTIME_DIR}/ozwald-{n}.container") for n in names(variant, count)}


def direct_round(host: TestHost, texts: dict[str, str]) -> Round:
    for name, text in texts.items():
        host.write_file(f"{RUNTIME_DIR}/ozbench-{name}.container", text)
    units = " ".join(f"ozbench-{n}.service" for n in texts)
    files = " ".join(f"{RUNTIME_DIR}/ozbench-{n}.container" for n in texts)
    script = (f"t0=$(date +%s%N); systemctl daemon-reload && systemctl start {units}; r1=$?; t1=$(date +%s%N); "
              f"systemctl stop {units}; r2=$?; t2=$(date +%s%N); rm -f {files}; systemctl daemon-reload; "
              f"systemctl reset-failed 'ozbench-*' 2>/dev/null; t3=$(date +%s%N); echo $r1 $r2 $t0 $t1 $t2 $t3")
    out = host.exec(["sh", "-c", script], timeout=900, check=True).stdout.split()
    if out[:2] != ["0", "0"]:
        raise RuntimeError(f"direct start/stop failed: {out}\n{host.journal(lines=40)}")
    t0, t1, t2, t3 = (int(x) / 1e9 for x in out[2:6])
    time.sleep(1.0)
    return Round(t1 - t0, t2 - t1, t3 - t1)


def up_and_down(host: TestHost, api: Api, client: SystemdClient, variant: str, count: int, rounds: int
                ) -> dict[str, list[Round]]:
    # Warm-up (not counted): the first start of the image pays for storage setup; it also gives the texts.
    items = [{"name": n, "service": variant} for n in names(variant, count)]
    api.json("POST", UPDATE, items)
    wait_api(api, all_available(count))
    texts = capture_units(host, variant, count)
    api.json("POST", UPDATE, [])
    wait_api(api, lambda items: items == [])
    while not ozwald_unloaded(host, client):
        time.sleep(0.05)
    time.sleep(1.0)
    results: dict[str, list[Round]] = {"ozwald": [], "direct": []}
    for round_no in range(rounds):
        order = ["ozwald", "direct"] if round_no % 2 == 0 else ["direct", "ozwald"]
        for path in order:
            result = ozwald_round(host, api, client, variant, count) if path == "ozwald" else direct_round(host, texts)
            results[path].append(result)
            print(f"  {variant} round {round_no + 1} {path:<6} up {result.up:7.2f} s  down {result.down_api:6.2f} s"
                  f"  (clean {result.down_clean:6.2f} s)  load {load_average()}", flush=True)
    return results


# -- Phases 2 and 5: CPU ------------------------------------------------------------------------------------

def cpu_seconds(host: TestHost, pid: int) -> float:
    fields = host.guest_path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime (fields 14, 15) in USER_HZ ticks


def idle_cpu(host: TestHost, pid: int, seconds: float) -> float:
    """CPU seconds per minute of the process over `seconds` of doing nothing asked."""
    before, t0 = cpu_seconds(host, pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(host, pid) - before) / (time.monotonic() - t0) * 60.0


# -- Phase 4: kill -9 -------------------------------------------------------------------------------------

def invocations(host: TestHost, units: list[str]) -> dict[str, str]:
    out = host.systemctl("show", "-p", "Id,InvocationID,NRestarts", *units).stdout
    found: dict[str, str] = {}
    for block in out.strip().split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        found[values.get("Id", "?")] = f"{values.get('InvocationID')}/{values.get('NRestarts')}"
    return found


@dataclass
class Adoption:
    first_answer: float = 0.0  # seconds after the kill
    first_truthful: float = 0.0
    process_started: float = 0.0
    untruthful_answers: int = 0
    answers: int = 0
    first_statuses: dict[str, int] = field(default_factory=dict)
    restarted_units: list[str] = field(default_factory=list)


def kill_and_adopt(host: TestHost, ozwald: ProvisionerDeployment, count: int) -> Adoption:
    units = [f"ozwald-{n}.service" for n in names("light", count)]
    before = invocations(host, units)
    api = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=5)
    old_pid = ozwald.main_pid()
    result = Adoption()
    t0 = time.monotonic()
    host.systemctl("kill", "-s", "KILL", UNIT)
    while True:
        try:
            status, items = api.json("GET", ACTIVE)
        except (OSError, ValueError, http.client.HTTPException):
            status, items = 0, []
        now = time.monotonic() - t0
        if status != 200:
            if now > 120:
                raise TimeoutError(f"no 200 answer 120 s after the kill (last {status}):\n{ozwald.journal(lines=30)}")
            time.sleep(0.005)
            continue
        result.answers += 1
        if not result.first_answer:
            result.first_answer = now
            result.first_statuses = dict(statistics_count(i["status"] for i in items))
        if len(items) == count and all(i["status"] == "available" for i in items):
            result.first_truthful = now
            break
        result.untruthful_answers += 1
        time.sleep(0.005)
    new_pid = ozwald.main_pid()
    if new_pid == old_pid:
        raise RuntimeError("ozwald.service was not restarted")
    started = float(ozwald.show("ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"]) / 1e6
    result.process_started = started - t0
    time.sleep(3)  # anything the adoption would restart has had time to begin
    after = invocations(host, units)
    result.restarted_units = [u for u in units if before.get(u) != after.get(u)]
    api.close()
    return result


def statistics_count(values: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:  # type: ignore[attr-defined]
        counts[value] = counts.get(value, 0) + 1
    return counts


# -- Trace ---------------------------------------------------------------------------------------------------

@dataclass
class Event:
    start: float
    end: float
    thread: str
    what: str
    extra: str


def trace_events(host: TestHost, since_pid: int) -> list[Event]:
    out = host.exec(["journalctl", f"_PID={since_pid}", "-o", "cat", "--no-pager"], timeout=60).stdout
    return parse_trace(out)


TRACE_LINE = re.compile(r"^OZTRACE (.+) (\S+) (\d+\.\d+) (\d+\.\d+)(?: (\S+))?$")


def parse_trace(text: str) -> list[Event]:
    """OZTRACE lines (bench/ozwald_trace.py); a thread's name may hold spaces ("Thread-2 (_receiver)")."""
    events = []
    for line in text.splitlines():
        if (m := TRACE_LINE.match(line)) is not None:
            events.append(Event(float(m[3]), float(m[4]), m[1].replace(" ", "_"), m[2], m[5] or ""))
    return sorted(events, key=lambda e: e.start)


@dataclass
class PassCost:
    seconds: float
    calls: int  # D-Bus method calls
    round_trips: int  # calls and pipelined batches: waits for systemd


def pass_costs(events: list[Event], after: float) -> list[PassCost]:
    costs = []
    for p in (e for e in events if e.what == "Reconciler._pass" and e.start >= after):
        inner = [e for e in events if e.thread == p.thread and p.start <= e.start and e.end <= p.end]
        calls = sum(1 for e in inner if e.what == "SystemdClient._call")
        batches = [int(e.extra or 0) for e in inner if e.what == "SystemdClient._call_each" and e.extra != "0"]
        costs.append(PassCost(p.end - p.start, calls + sum(batches), calls + len(batches)))
    return costs


def enable_trace(host: TestHost, ozwald: ProvisionerDeployment) -> None:
    host.write_file(TRACE_GUEST, (Path(__file__).parent / "ozwald_trace.py").read_text())
    # Not ozwald.write_drop_in: its daemon-reload must not restart anything; the kill -9 restarts the service.
    ozwald.write_drop_in(f"[Service]\nEnvironment=OZTRACE_ONLY={TRACED}\nExecStart=\n"
                         f"ExecStart={VENV}/bin/python {TRACE_GUEST} serve\n")


# -- Phase 6: blocking queries ---------------------------------------------------------------------------------

def watchers(host: TestHost, ozwald: ProvisionerDeployment, clients: int, stop: threading.Event
             ) -> tuple[list[threading.Thread], list[tuple[float, int]]]:
    seen: list[tuple[float, int]] = []
    lock = threading.Lock()

    def watch() -> None:
        api = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=30)
        api.raw("GET", ACTIVE)
        revision = int(api.last_headers["x-ozwald-revision"])
        while not stop.is_set():
            status, _ = api.raw("GET", f"{ACTIVE}?after={revision}&wait=2")
            now = time.monotonic()
            new = int(api.last_headers.get("x-ozwald-revision", revision))
            if status == 200 and new != revision:
                with lock:
                    seen.append((now, new))
            revision = new
        api.close()

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads, seen


class ActiveTruth:
    """The truth monitor's rule at scale, for instances that publish no port: every instance the API calls
    `available` has its unit active in systemd just before or just after that answer (read over D-Bus from
    this machine). Runs in a thread while the fleet is stopped and started."""

    def __init__(self, host: TestHost, ozwald: ProvisionerDeployment) -> None:
        self.client = SystemdClient(host.bus_address)
        self.api = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=30)
        self.samples = self.checked = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _active(self) -> set[str]:
        return {u.name for u in self.client.list_units("ozwald-*") if u.active_state == "active"}

    def _run(self) -> None:
        while not self._stop.is_set():
            before = self._active()
            status, items = self.api.json("GET", ACTIVE)
            after = self._active()
            if status != 200:
                continue
            self.samples += 1
            for item in items:
                if item["status"] == "available":
                    self.checked += 1
                    unit = f"ozwald-{item['name']}.service"
                    if unit not in before and unit not in after:
                        self.violations.append(f"{item['name']} available, unit not active")

    def __enter__(self) -> ActiveTruth:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()
        self.api.close()


def wake_latencies(events: list[Event], seen: list[tuple[float, int]]) -> list[float]:
    """Per answer: its arrival minus the start of the first publish that reached its revision."""
    made: dict[int, float] = {}
    for e in events:
        if e.what == "Provisioner._publish" and e.extra.isdigit():
            made.setdefault(int(e.extra), e.start)  # it wakes the waiters before it writes the Redis copy
    return [now - made[rev] for now, rev in seen if rev in made]


# -- Report -----------------------------------------------------------------------------------------------------

def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "ozwald"], capture_output=True, text=True, check=False)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["light", "light-health"])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of each idle CPU window")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--api-rounds", type=int, default=3)
    parser.add_argument("--quiet-changes", type=int, default=20, help="re-posts of the fleet in the wake phase")
    parser.add_argument("--skip", nargs="*", default=[], choices=["updown", "api", "kill", "watch"])
    args = parser.parse_args()
    n = args.instances
    print(f"# commit {commit()}; {cpu_count()} CPUs; load average before: {load_average()}", flush=True)
    started = time.monotonic()
    with deployed(SERVICES, edit_config=lambda c: with_resync(c, "3600")) as (host, ozwald):
        client = SystemdClient(host.bus_address)
        api = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=60)
        pid = main_pid(host, UNIT)
        time.sleep(2)
        rss_idle = vm_rss_kib(host, pid)
        print(f"# ozwald serve idle, no instance: VmRSS {rss_idle} KiB", flush=True)

        updown: dict[str, dict[str, list[Round]]] = {}
        if "updown" not in args.skip:
            for variant in args.variants:
                try:
                    updown[variant] = up_and_down(host, api, client, variant, n, args.rounds)
                except Exception:  # report the other phases anyway
                    traceback.print_exc()
                    recover(host, api, client)

        # The light fleet stays up for the rest.
        api.json("POST", UPDATE, [{"name": x, "service": "light"} for x in names("light", n)])
        wait_api(api, all_available(n))
        time.sleep(3)
        cpu_idle = idle_cpu(host, pid, args.idle)
        rss_fleet = vm_rss_kib(host, pid)
        print(f"# {n} instances available; idle CPU {cpu_idle:.3f} s/min (no resync); VmRSS {rss_fleet} KiB",
              flush=True)

        api_results: dict[tuple[str, int], list[WrkResult]] = {}
        peaks = {"ozwald": 0, "floor-mem": 0}
        body = b""
        if "api" not in args.skip:
            try:
                _, body = api.raw("GET", ACTIVE)
                store_answer(host, ozwald, body)
                servers = {"ozwald": (ozwald.url(ACTIVE), pid),
                           "floor-mem": (host.url(8002, ACTIVE), start_floor(host, ozwald, "floor-mem", body))}
                for url, _ in servers.values():
                    wrk(url, ozwald.system_key, 32, 2)  # warm-up
                for round_no in range(args.api_rounds):
                    for conns in (1, 32):
                        order = ["ozwald", "floor-mem"] if round_no % 2 == 0 else ["floor-mem", "ozwald"]
                        for name in order:
                            url, server_pid = servers[name]
                            with RssSampler(host, server_pid) as sampler:
                                result = wrk(url, ozwald.system_key, conns, args.duration)
                            peaks[name] = max(peaks[name], sampler.peak_kib)
                            api_results.setdefault((name, conns), []).append(result)
                            print(f"  api round {round_no + 1} c={conns:<3} {name:<9} {result.rps:8.0f} req/s  "
                                  f"p50 {result.p50 * 1000:6.2f} ms  p99 {result.p99 * 1000:6.2f} ms", flush=True)
                host.exec(["systemctl", "stop", "ozbench-floor-mem.service"])
            except Exception:
                traceback.print_exc()
        rss_after_load = vm_rss_kib(host, pid)

        adoption = None
        resync_cpu = float("nan")
        costs: list[PassCost] = []
        latencies: list[float] = []
        quiet: list[float] = []
        if "kill" not in args.skip:
            try:
                ozwald.write_config(with_resync(ozwald.default_config(SERVICES), "10s"))
                enable_trace(host, ozwald)
                adoption = kill_and_adopt(host, ozwald, n)
                pid = main_pid(host, UNIT)
                print(f"# kill -9: first answer {adoption.first_answer:.2f} s, truthful {adoption.first_truthful:.2f} s"
                      f" after the kill; restarted units {len(adoption.restarted_units)}", flush=True)
                time.sleep(2)
                t_idle = time.monotonic()
                resync_cpu = idle_cpu(host, pid, args.idle)
                costs = pass_costs(trace_events(host, pid), t_idle)
                print(f"# idle CPU with a resync every 10 s: {resync_cpu:.3f} s/min; passes {len(costs)}", flush=True)
                if "watch" not in args.skip:
                    stop = threading.Event()
                    threads, seen = watchers(host, ozwald, 4, stop)
                    t_watch = time.monotonic()
                    time.sleep(1)
                    with ActiveTruth(host, ozwald) as truth:
                        api.json("POST", UPDATE, [])
                        wait_api(api, lambda items: items == [])
                        api.json("POST", UPDATE, [{"name": x, "service": "light"} for x in names("light", n)])
                        wait_api(api, all_available(n))
                        time.sleep(2)
                    print(f"  truth: {truth.samples} samples, {truth.checked} `available` checked against systemd, "
                          f"{len(truth.violations)} violations {truth.violations[:3]}", flush=True)
                    # The same wake-up without 100 containers churning on two cores: the same set posted
                    # again is a new generation, so all 100 statuses change and the waiters are answered.
                    t_quiet = time.monotonic()
                    fleet = [{"name": x, "service": "light"} for x in names("light", n)]
                    for _ in range(args.quiet_changes):
                        api.json("POST", UPDATE, fleet)
                        time.sleep(0.5)
                    time.sleep(1)
                    stop.set()
                    for thread in threads:
                        thread.join(10)
                    events = trace_events(host, pid)
                latencies = wake_latencies(events, [x for x in seen if x[0] < t_quiet])
                quiet = wake_latencies(events, [x for x in seen if x[0] >= t_quiet])
                busy = [e for e in events if e.start >= t_watch]
                for what in ("Reconciler._pass", "Reconciler._read_dirty", "Reconciler._publish",
                             "Reconciler._container_ids_of", "Provisioner._publish", "SystemdClient._call",
                             "SystemdClient._call_each"):
                    spans = [e.end - e.start for e in busy if e.what == what]
                    print(f"  trace, stop + start of {n}: {what:<26} {len(spans):5d} calls, "
                          f"{sum(spans):7.3f} s in all, max {max(spans, default=0) * 1000:7.1f} ms", flush=True)
            except Exception:
                traceback.print_exc()
        rss_end = vm_rss_kib(host, pid)
        client.close()
        api.close()
    print(f"\n# load average after: {load_average()}; run took {time.monotonic() - started:.0f} s; "
          f"commit {commit()}")

    # -- Report
    for variant, paths in updown.items():
        o, d = paths["ozwald"], paths["direct"]
        up_o, up_d = med([r.up for r in o]), med([r.up for r in d])
        dn_o, dn_d = med([r.down_api for r in o]), med([r.down_api for r in d])
        cl_o, cl_d = med([r.down_clean for r in o]), med([r.down_clean for r in d])
        print(f"\n== {n} x {variant}, medians of {len(o)} rounds")
        print(f"  up:    ozwald {up_o:7.2f} s  direct {up_d:7.2f} s  ratio {up_o / up_d:5.2f}x  "
              f"(goal <= {GOAL_UP}x: {verdict(up_o / up_d <= GOAL_UP)})")
        print(f"  down:  ozwald {dn_o:7.2f} s  direct stop {dn_d:7.2f} s  ratio {dn_o / dn_d:5.2f}x  "
              f"(goal <= {GOAL_DOWN}x: {verdict(dn_o / dn_d <= GOAL_DOWN)})")
        print(f"  clean: ozwald {cl_o:7.2f} s  direct stop+rm+reload {cl_d:7.2f} s  ratio {cl_o / cl_d:5.2f}x")
        print(f"  rounds: ozwald {[(round(r.up, 2), round(r.down_api, 2)) for r in o]}, "
              f"direct {[(round(r.up, 2), round(r.down_api, 2)) for r in d]}")
    if api_results:
        print(f"\n== GET {ACTIVE} with {n} instances ({len(body)} bytes), medians of {args.api_rounds} x "
              f"{args.duration:g} s")
        for conns in (1, 32):
            mo = api_results[("ozwald", conns)]
            mf = api_results[("floor-mem", conns)]
            rps_o, rps_f = med([r.rps for r in mo]), med([r.rps for r in mf])
            p99_o, p99_f = med([r.p99 for r in mo]), med([r.p99 for r in mf])
            print(f"  c={conns:<3} ozwald {rps_o:7.0f} req/s p50 {med([r.p50 for r in mo]) * 1000:6.2f} ms p99 "
                  f"{p99_o * 1000:6.2f} ms | floor-mem {rps_f:7.0f} req/s p50 {med([r.p50 for r in mf]) * 1000:6.2f}"
                  f" ms p99 {p99_f * 1000:6.2f} ms | {rps_o / rps_f:4.2f}x req/s "
                  f"({verdict(rps_o / rps_f >= GOAL_RPS)}), p99 {p99_o / p99_f:4.2f}x "
                  f"({verdict(p99_o / p99_f <= GOAL_P99)})")
    print(f"\n== VmRSS of ozwald serve: idle {kib_mb(rss_idle)} (goal <= {GOAL_RSS_IDLE_MB:g}: "
          f"{verdict((rss_idle or 0) / 1024 <= GOAL_RSS_IDLE_MB)}); with {n} instances {kib_mb(rss_fleet)}; "
          f"under load (max) {kib_mb(peaks['ozwald'])}, after {kib_mb(rss_after_load)} (goal <= {GOAL_RSS_LOAD_MB:g}: "
          f"{verdict(max(peaks['ozwald'], rss_after_load or 0) / 1024 <= GOAL_RSS_LOAD_MB)}); floor-mem under load "
          f"{kib_mb(peaks['floor-mem'])}; at the end (traced process) {kib_mb(rss_end)}")
    print(f"\n== Idle CPU of ozwald serve with {n} instances: {cpu_idle:.3f} s/min without resync; "
          f"{resync_cpu:.3f} s/min with a resync every 10 s")
    if costs:
        print(f"  resync passes: {len(costs)}; median {med([c.seconds for c in costs]) * 1000:.1f} ms, "
              f"max {max(c.seconds for c in costs) * 1000:.1f} ms; D-Bus calls per pass "
              f"{sorted({c.calls for c in costs})}, round trips per pass {sorted({c.round_trips for c in costs})}")
    if adoption is not None:
        print(f"\n== kill -9 with {n} instances: new process started {adoption.process_started:.2f} s after the "
              f"kill; first answer {adoption.first_answer:.2f} s ({adoption.first_statuses}); first truthful "
              f"{adoption.first_truthful:.2f} s; untruthful answers {adoption.untruthful_answers}/{adoption.answers};"
              f" instances restarted: {len(adoption.restarted_units)} {adoption.restarted_units[:5]}")
    if latencies:
        print(f"\n== Blocking queries, 4 clients, {len(latencies)} answers while {n} instances stopped and "
              f"started: publish -> answer median {med(latencies) * 1000:.2f} ms, p99 {pct(latencies, 0.99) * 1000:.2f}"
              f" ms, max {max(latencies) * 1000:.2f} ms (goal <= {GOAL_WAKE_S * 1000:g} ms: "
              f"{verdict(pct(latencies, 0.99) <= GOAL_WAKE_S)} at p99)")
    if quiet:
        print(f"  {len(quiet)} answers to {args.quiet_changes} re-posts of the same {n} instances (every status "
              f"changes, no container churn): median {med(quiet) * 1000:.2f} ms, p99 {pct(quiet, 0.99) * 1000:.2f}"
              f" ms, max {max(quiet) * 1000:.2f} ms (goal <= {GOAL_WAKE_S * 1000:g} ms: "
              f"{verdict(pct(quiet, 0.99) <= GOAL_WAKE_S)} at p99)")


def kib_mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MB"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
