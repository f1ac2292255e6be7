# SPDX-License-Identifier: AGPL-3.0-or-later
"""Added latency of the API: POST /srv/services/active/update/ → the instance `available`, against starting
the same unit directly over D-Bus.

Ozwald runs as ozwald.service in a booted test host (the integration tests' deployment). Both paths start
the same rendered Quadlet unit in that host, alternating round by round (the order flips every round):

- ozwald: POST the one-instance desired set, then blocking queries GET /srv/services/active/?after=<revision>
  (one keep-alive connection from this machine; each is answered when a status changes) until the instance
  is `available`; timed from before the POST to the answer that says so. With `--poll`, a plain GET every
  ~5 ms instead, as a client without blocking queries would;
- direct: write the unit file Ozwald wrote (same text; named `ozbench-<instance>.container` so that
  Ozwald's reconciler never sees or stops it), then SystemdClient(host.bus_address).reload() and
  start_unit() from this machine; timed from before the write until the start job has finished.

Between rounds the instance is removed: POST [] and wait until it is gone from the API, its file deleted
and its unit unloaded / stop_unit, delete the file and reload. Two variants: the test server with a
health check (probe python3, interval 1 s, Notify=healthy: ready = first healthy check) and without one
(ready = container started). Each round is also split with the unit's own timestamps (CLOCK_MONOTONIC is
shared with the guest): `pre` = t0 → systemd begins the start (InactiveExitTimestamp), `start` = the
start itself (→ ActiveEnterTimestamp), `post` = active → the caller knows it.

Run as root:

    .venv/bin/python -m bench.bench_update_latency [--rounds 15] [--variants health nohealth]

`--trace` runs Ozwald through bench/ozwald_trace.py and prints the median round's timeline; `--poll-direct`
(a control, with `--poll`) puts the same ~5 ms GET polling load on the direct rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.deployed import TESTSERVER, Api, deployed, load_average, monotonic_props
from ozwald.systemd import SystemdClient, SystemdError
from tests.deploy.guest import VENV, ProvisionerDeployment
from tests.testhost.harness import TestHost

GOAL_ADDED_S = 0.050
SLOW_MODE_S = 0.2
POLL_S = 0.005
UPDATE = "/srv/services/active/update/"
ACTIVE = "/srv/services/active/"
RUNTIME_DIR = "/run/containers/systemd"
VARIANTS = {  # instance (= service) name → health check
    "health": '{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s, timeout: 2s}',
    "nohealth": None,
}
SERVICES = "".join(
    f"  - name: {name}\n    image: {TESTSERVER}\n" + (f"    health: {health}\n" if health else "")
    for name, health in VARIANTS.items()
)


@dataclass
class Sample:
    t0: float  # CLOCK_MONOTONIC, seconds
    t1: float
    began: float  # the unit's InactiveExitTimestamp
    active: float  # the unit's ActiveEnterTimestamp
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.t1 - self.t0

    @property
    def pre(self) -> float:
        return self.began - self.t0

    @property
    def start(self) -> float:
        return self.active - self.began

    @property
    def post(self) -> float:
        return self.t1 - self.active


def sample(host: TestHost, unit: str, t0: float, t1: float, **extra: float) -> Sample:
    ts = monotonic_props(host, unit, "InactiveExitTimestamp", "ActiveEnterTimestamp")
    return Sample(t0, t1, ts["InactiveExitTimestamp"], ts["ActiveEnterTimestamp"], dict(extra))


# -- Ozwald ----------------------------------------------------------------------------------------------

def ozwald_round(host: TestHost, api: Api, name: str, poll: bool = False, timeout: float = 120.0) -> Sample:
    """Blocking queries by default (GET ?after=<revision>, answered at each change); `poll`: every ~5 ms."""
    revision = None
    if not poll:
        api.json("GET", ACTIVE)
        revision = api.last_headers["x-ozwald-revision"]
    t0 = time.monotonic()
    status, body = api.json("POST", UPDATE, [{"name": name}])
    t_posted = time.monotonic()
    if status != 202:
        raise RuntimeError(f"update refused: {status} {body}")
    polls = 0
    deadline = t0 + timeout
    while True:
        status, items = api.json("GET", ACTIVE if poll else f"{ACTIVE}?after={revision}&wait=10")
        t1 = time.monotonic()
        polls += 1
        revision = api.last_headers.get("x-ozwald-revision", revision)
        item = next((i for i in items if i["name"] == name), None) if status == 200 else None
        if item is not None and item["status"] == "available":
            break
        if item is not None and item["status"] == "failed":
            raise RuntimeError(f"{name} failed: {item}")
        if t1 > deadline:
            raise TimeoutError(f"{name} not available after {timeout} s: {status} {items}")
        if poll:
            time.sleep(POLL_S)
    return sample(host, f"ozwald-{name}.service", t0, t1, post_s=t_posted - t0, polls=polls)


def ozwald_clean(host: TestHost, api: Api, client: SystemdClient, name: str, timeout: float = 120.0) -> None:
    status, body = api.json("POST", UPDATE, [])
    if status != 202:
        raise RuntimeError(f"update [] refused: {status} {body}")
    unit, path = f"ozwald-{name}.service", host.guest_path(f"{RUNTIME_DIR}/ozwald-{name}.container")
    deadline = time.monotonic() + timeout
    while True:
        status, items = api.json("GET", ACTIVE)
        gone = status == 200 and not any(i["name"] == name for i in items)
        if gone and not path.exists() and client.unit_state(unit).load_state != "loaded":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not removed after {timeout} s: {items}")
        time.sleep(0.05)
    time.sleep(0.5)  # let the pass that removed it (and the one its own Redis notification wakes) finish


# -- Direct over D-Bus -----------------------------------------------------------------------------------

def direct_round(host: TestHost, client: SystemdClient, name: str, text: str, poller: Poller | None = None
                 ) -> Sample:
    unit = f"ozbench-{name}.service"
    with poller or contextlib.nullcontext():
        t0 = time.monotonic()
        host.write_file(f"{RUNTIME_DIR}/ozbench-{name}.container", text)
        client.reload()
        client.start_unit(unit, timeout=120)
        t1 = time.monotonic()
    return sample(host, unit, t0, t1)


class Poller:
    """--poll-direct: GET /srv/services/active/ every ~5 ms from a thread while a direct round runs, so that
    the direct path bears the same polling load as the Ozwald path (a control, not the baseline)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.api.raw("GET", ACTIVE)
            time.sleep(POLL_S)

    def __enter__(self) -> Poller:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def direct_clean(host: TestHost, client: SystemdClient, name: str) -> None:
    unit = f"ozbench-{name}.service"
    client.stop_unit(unit, timeout=120)
    host.guest_path(f"{RUNTIME_DIR}/ozbench-{name}.container").unlink(missing_ok=True)
    client.reload()
    with contextlib.suppress(SystemdError):
        client.reset_failed(unit)
    time.sleep(0.5)


# -- Tracing (--trace) ---------------------------------------------------------------------------------

TRACE_GUEST = "/usr/local/lib/ozbench/ozwald_trace.py"


def enable_trace(host: TestHost, ozwald: ProvisionerDeployment) -> None:
    """Run ozwald.service through bench/ozwald_trace.py, which logs the timing of its update path."""
    host.write_file(TRACE_GUEST, (Path(__file__).parent / "ozwald_trace.py").read_text())
    ozwald.write_drop_in(f"[Service]\nExecStart=\nExecStart={VENV}/bin/python {TRACE_GUEST} serve\n")
    ozwald.restart()


def trace_events(host: TestHost) -> list[tuple[float, float, str, str]]:
    out = host.exec(["journalctl", "-u", "ozwald.service", "-b", "-o", "cat", "--no-pager"], timeout=60).stdout
    events = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "OZTRACE":
            events.append((float(parts[3]), float(parts[4]), parts[1], parts[2]))
    return sorted(events)


def print_timeline(events: list[tuple[float, float, str, str]], s: Sample) -> None:
    marks = [(s.began, "systemd: start begins (InactiveExit)"), (s.active, "systemd: unit active (ActiveEnter)"),
             (s.t1, "bench: GET says available")]
    rows = [(start, f"{(start - s.t0) * 1000:8.1f} ms  {(end - start) * 1000:7.1f} ms  {thread:<22} {what}")
            for start, end, thread, what in events if s.t0 <= start <= s.t1]
    rows += [(t, f"{(t - s.t0) * 1000:8.1f} ms  {'':>10}  {'':<22} -- {what}") for t, what in marks]
    print(f"  timeline of the median ozwald round (total {ms(s.total)}), from the POST: start, duration, thread")
    for _, row in sorted(rows):
        print("   " + row)


# -- Report ----------------------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(variant: str, ours: list[Sample], base: list[Sample]) -> float:
    def med(samples: list[Sample], attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in samples))

    om, bm = med(ours, "total"), med(base, "total")
    added = om - bm
    paired = statistics.median(o.total - b.total for o, b in zip(ours, base, strict=True))
    verdict = "met" if added <= GOAL_ADDED_S else "MISSED"
    print(f"\n== {variant}: {len(ours)} rounds")
    print(f"  ozwald median {om:.3f} s, direct median {bm:.3f} s, added {ms(added)} "
          f"(median of paired differences {ms(paired)}), ratio {om / bm:.2f}x; goal <= 50 ms: {verdict}")
    for attr, what in (("pre", "t0 → start begins"), ("start", "start → active"), ("post", "active → caller knows")):
        print(f"  {attr:<5} ({what:<21}) ozwald {ms(med(ours, attr)):>7}, direct {ms(med(base, attr)):>7}")
    print(f"  ozwald POST answered after {ms(statistics.median(s.extra['post_s'] for s in ours))} (median), "
          f"{statistics.median(s.extra['polls'] for s in ours):.0f} GETs after it per round")
    if VARIANTS[variant]:
        # Bimodal: when the server is not listening yet at Podman's first health check, the unit becomes
        # healthy ~0.3 s later. Count the rounds whose start phase is in the slow mode.
        fastest = min(s.start for s in ours + base)
        late = [sum(s.start > fastest + SLOW_MODE_S for s in runs) for runs in (ours, base)]
        print(f"  rounds in the slow mode (start > fastest + {SLOW_MODE_S:g} s): ozwald {late[0]}/{len(ours)}, "
              f"direct {late[1]}/{len(base)}")
    print(f"  ozwald totals {[round(s.total, 3) for s in ours]}")
    print(f"  direct totals {[round(s.total, 3) for s in base]}")
    return added


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--trace", action="store_true",
                        help="run Ozwald through bench/ozwald_trace.py and print the median round's timeline "
                             "(diagnostic: the probes cost a little time themselves)")
    parser.add_argument("--poll", action="store_true",
                        help="learn the status by polling GET /srv/services/active/ every ~5 ms (what clients "
                             "without blocking queries do) instead of blocking queries")
    parser.add_argument("--poll-direct", action="store_true",
                        help="control: poll Ozwald's GET every ~5 ms during the direct rounds too")
    args = parser.parse_args()
    print(f"# load average before: {load_average()}", flush=True)
    with deployed(SERVICES) as (host, ozwald):
        if args.trace:
            enable_trace(host, ozwald)
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        poller = Poller(Api(host.ip, ozwald.api_port, ozwald.system_key)) if args.poll_direct else None
        client = SystemdClient(host.bus_address)
        results: dict[str, float] = {}
        runs: dict[str, list[Sample]] = {}
        try:
            for variant in args.variants:
                name = variant
                # Warm-up, not counted: the first start pays for storage and caches in both paths.
                ozwald_round(host, api, name, args.poll)
                text = host.read_file(f"{RUNTIME_DIR}/ozwald-{name}.container")
                ozwald_clean(host, api, client, name)
                direct_round(host, client, name, text)
                direct_clean(host, client, name)
                ours: list[Sample] = []
                base: list[Sample] = []
                for round_no in range(args.rounds):
                    order = ["ozwald", "direct"] if round_no % 2 == 0 else ["direct", "ozwald"]
                    for path in order:
                        if path == "ozwald":
                            ours.append(ozwald_round(host, api, name, args.poll))
                            ozwald_clean(host, api, client, name)
                        else:
                            base.append(direct_round(host, client, name, text, poller))
                            direct_clean(host, client, name)
                    print(f"  {variant} round {round_no + 1}: ozwald {ours[-1].total:.3f} s, "
                          f"direct {base[-1].total:.3f} s", flush=True)
                results[variant] = report(variant, ours, base)
                runs[variant] = ours
            if args.trace:
                events = trace_events(host)
                for variant, ours in runs.items():
                    middle = sorted(ours, key=lambda x: x.total)[len(ours) // 2]
                    print(f"\n== {variant}")
                    print_timeline(events, middle)
        finally:
            api.close()
            client.close()
        print(f"\n# load average after: {load_average()}")
        _print_summary(results)


def _print_summary(results: dict[str, float]) -> None:
    print("\nsummary: " + "; ".join(f"{v}: added {ms(a)} ({'met' if a <= GOAL_ADDED_S else 'MISSED'})"
                                   for v, a in results.items()))


if __name__ == "__main__":
    main()
