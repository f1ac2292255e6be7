# SPDX-License-Identifier: AGPL-3.0-or-later
"""Model swap: a profile change → the new container `available`, against doing the same by hand over D-Bus.

Ozwald runs as ozwald.service in a booted test host. One instance swaps between two profiles (`small` ↔
`large`, a different environment each), round after round, and the two paths alternate (the order flips
every round):

- ozwald: POST the instance with the other profile, then blocking queries GET /srv/services/active/?after=
  until it is `available` under that profile with no change pending (Ozwald's truth rules: only once the
  unit running the new spec is ready); timed from before the POST to the answer that says so;
- direct: write the unit file for the other profile (the text Ozwald renders, under the name
  `ozbench-swap.container` so that the reconciler never touches it), Reload() and RestartUnit() over D-Bus
  from this machine, waiting for the restart job; timed from before the write to the job's end.

Two variants: with a health check (ready = healthy) and without (ready = up for `min_uptime`, 1 s here).
The Ozwald path also counts failures: every swap must end `available`, none `failed` (systemd's start
limit of 5 starts in 5 minutes is hit by the 6th deliberate restart unless Ozwald resets it).

Run as root:

    .venv/bin/python -m bench.bench_swap [--rounds 20] [--variants health nohealth]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.deployed import TESTSERVER, Api, deployed, load_average, monotonic_props
from ozwald.systemd import SystemdClient
from tests.testhost.harness import TestHost

GOAL_ADDED_S = 0.050
UPDATE = "/srv/services/active/update/"
ACTIVE = "/srv/services/active/"
RUNTIME_DIR = "/run/containers/systemd"
PROFILES = ("small", "large")
VARIANTS = {
    "health": '{http: "http://127.0.0.1:8000/health", probe: python3, interval: 1s, timeout: 2s}',
    "nohealth": None,
}
SERVICES = "".join(
    f"  - name: swap-{name}\n    image: {TESTSERVER}\n    min_uptime: 1s\n"
    + (f"    health: {health}\n" if health else "")
    + "    profiles:\n      small: {environment: {MODEL_NAME: small}}\n"
    + "      large: {environment: {MODEL_NAME: large, MAX_MODEL_LEN: '45000'}}\n"
    for name, health in VARIANTS.items()
)


def ozwald_swap(api: Api, name: str, profile: str, timeout: float = 120.0) -> tuple[float, str, float, float]:
    """Seconds from the POST to `available` under `profile`; and the last status seen (for failures)."""
    api.json("GET", ACTIVE)
    revision = api.last_headers["x-ozwald-revision"]
    t0 = time.monotonic()
    status, body = api.json("POST", UPDATE, [{"name": name, "profile": profile}])
    if status != 202:
        raise RuntimeError(f"update refused: {status} {body}")
    while True:
        status, items = api.json("GET", f"{ACTIVE}?after={revision}&wait=10")
        t1 = time.monotonic()
        revision = api.last_headers.get("x-ozwald-revision", revision)
        item = next((i for i in items if i["name"] == name), None) if status == 200 else None
        if item is not None and item["status"] == "failed":
            return t1 - t0, f"failed: {item['info'].get('reason')}", t0, t1
        if item is not None and item["status"] == "available" and item["profile"] == profile \
                and "pending" not in item["info"]:
            return t1 - t0, "available", t0, t1
        if t1 - t0 > timeout:
            raise TimeoutError(f"{name} not available as {profile} after {timeout} s: {items}")


def direct_swap(host: TestHost, client: SystemdClient, name: str, text: str) -> tuple[float, float, float]:
    unit = f"ozbench-{name}.service"
    t0 = time.monotonic()
    host.write_file(f"{RUNTIME_DIR}/ozbench-{name}.container", text)
    client.reload()
    client.reset_failed(unit)  # what Ozwald does too, or the 6th restart in 5 minutes hits the start limit
    client.restart_unit(unit, timeout=120)
    t1 = time.monotonic()
    return t1 - t0, t0, t1


PHASES = ("ActiveExitTimestamp", "InactiveEnterTimestamp", "InactiveExitTimestamp", "ActiveEnterTimestamp")


def phases(host: TestHost, unit: str, t0: float, t1: float) -> dict[str, float]:
    """Where a swap's time went, from the unit's own timestamps (CLOCK_MONOTONIC is shared with the guest):
    `pre` until the old container begins to stop, `stop`, `gap` (stopped → new start), `start` (→ active,
    the health check or min_uptime gate included), `post` (active → the caller knows)."""
    ts = monotonic_props(host, unit, *PHASES)
    exit_, down = ts["ActiveExitTimestamp"], ts["InactiveEnterTimestamp"]
    up, active = ts["InactiveExitTimestamp"], ts["ActiveEnterTimestamp"]
    return {"pre": exit_ - t0, "stop": down - exit_, "gap": up - down, "start": active - up, "post": t1 - active}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    print(f"# load average before: {load_average()}", flush=True)
    summary = []
    with deployed(SERVICES) as (host, ozwald):
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        client = SystemdClient(host.bus_address)
        try:
            for variant in args.variants:
                name = f"swap-{variant}"
                texts = {}
                for profile in PROFILES:  # warm-up, not counted; also gives the rendered units
                    ozwald_swap(api, name, profile)
                    texts[profile] = host.read_file(f"{RUNTIME_DIR}/ozwald-{name}.container").replace(
                        f"ozwald-{name}", f"ozbench-{name}")
                host.write_file(f"{RUNTIME_DIR}/ozbench-{name}.container", texts["large"])
                client.reload()
                client.start_unit(f"ozbench-{name}.service", timeout=120)
                ours: list[float] = []
                base: list[float] = []
                split: dict[str, list[dict[str, float]]] = {"ozwald": [], "direct": []}
                outcomes: list[str] = []
                for round_no in range(args.rounds):
                    profile = PROFILES[round_no % 2]
                    for path in (("ozwald", "direct") if round_no % 2 == 0 else ("direct", "ozwald")):
                        if path == "ozwald":
                            seconds, outcome, t0, t1 = ozwald_swap(api, name, profile)
                            ours.append(seconds)
                            outcomes.append(outcome)
                            split["ozwald"].append(phases(host, f"ozwald-{name}.service", t0, t1))
                        else:
                            seconds, t0, t1 = direct_swap(host, client, name, texts[profile])
                            base.append(seconds)
                            split["direct"].append(phases(host, f"ozbench-{name}.service", t0, t1))
                    print(f"  {variant} swap {round_no + 1} → {profile}: ozwald {ours[-1]:.3f} s ({outcomes[-1]}), "
                          f"direct {base[-1]:.3f} s", flush=True)
                client.stop_unit(f"ozbench-{name}.service", timeout=120)
                host.guest_path(f"{RUNTIME_DIR}/ozbench-{name}.container").unlink(missing_ok=True)
                client.reload()
                om, bm = statistics.median(ours), statistics.median(base)
                paired = statistics.median(o - b for o, b in zip(ours, base, strict=True))
                failures = sum(o != "available" for o in outcomes)
                added = om - bm
                print(f"\n== {variant}: {len(ours)} swaps in a row")
                print(f"  ozwald median {om:.3f} s, direct median {bm:.3f} s, added {ms(added)} (median of paired "
                      f"differences {ms(paired)}), ratio {om / bm:.2f}x; goal <= 50 ms: "
                      f"{'met' if added <= GOAL_ADDED_S else 'MISSED'}; failures {failures}/{len(ours)}")
                for phase in ("pre", "stop", "gap", "start", "post"):
                    print(f"  {phase:<5} ozwald {ms(statistics.median(p[phase] for p in split['ozwald'])):>7}, "
                          f"direct {ms(statistics.median(p[phase] for p in split['direct'])):>7}")
                print(f"  ozwald {[round(x, 3) for x in ours]}")
                print(f"  direct {[round(x, 3) for x in base]}")
                summary.append(f"{variant}: added {ms(added)}, failures {failures}/{len(ours)}")
                api.json("POST", UPDATE, [])
        finally:
            api.close()
            client.close()
    print(f"\n# load average after: {load_average()}")
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    main()
