# SPDX-License-Identifier: AGPL-3.0-or-later
"""Two on-demand instances that swap on one GPU (issue 18): the first byte of a request to B while A is warm,
against a floor measured side by side in the same run.

Ozwald runs as ozwald.service in a booted test host with the stand-in NVML (two 80 GB GPUs) and a CDI spec for
them (as tests/integration/test_gpu_admission.py). `a` and `b` are the test server (health check through
`probe: python3`, 3 s to become healthy), on demand, each declaring 50 GB of VRAM on GPU 0: admission puts
them in one swap group. `a-floor` and `b-floor` are the same services without `on_demand`; Ozwald only
renders them, and this script runs them as `ozbench-a` and `ozbench-b`.

Cycles alternate the two paths (the order flips every cycle), and the direction of the swap alternates:
- swap: A is `available` (warm), B `idle`; one request to B's socket, timed from before the connect to its
  first byte. Ozwald sees B's start at its gate, stops A (no request in flight), opens B's gate; B loads.
- floor: `ozbench-A` runs; from t0, StopUnit `ozbench-A` and StartUnit `ozbench-B` (each job awaited: what a
  person swapping by hand does at best), then the same request to B's port.
During the floor the on-demand instances are asleep, during the swap the floor units are stopped.

Run as root:

    .venv/bin/python -m bench.bench_gpu_swap [--cycles 20]
"""

from __future__ import annotations

import argparse
import time

from bench.bench_on_demand import ACTIVE, Served, first_byte_row, first_bytes, met, ms, request, wait_active
from bench.deployed import TESTSERVER, Api, deployed, load_average
from ozwald.systemd import SystemdClient
from tests.integration.test_gpu_admission import start_with_stand_in_gpus

PORTS = {"a": 8090, "b": 8092}
FLOOR_PORTS = {"a": 8091, "b": 8093}
RUNTIME_DIR = "/run/containers/systemd"
GOAL_ADDED_S = 0.100
SERVICE = (f"    image: {TESTSERVER}\n    restart: \"no\"\n    devices: [\"nvidia.com/gpu=0\"]\n"
           "    resources: {vram_gb: 50}\n"
           "    health: {http: \"http://127.0.0.1:8000/health\", probe: python3, interval: 1s, timeout: 2s}\n"
           "    environment: {START_DELAY_S: \"3\"}\n")
SERVICES = "".join(f"  - name: {n}\n    ports: [\"{PORTS[n]}:8000\"]\n    on_demand: {{idle_stop: 10m}}\n" + SERVICE
                   + f"  - name: {n}-floor\n    ports: [\"{FLOOR_PORTS[n]}:8000\"]\n" + SERVICE for n in PORTS)


def settle(api: Api, wanted: dict[str, str], timeout: float = 90.0) -> None:
    """Blocking queries until the named instances have the wanted statuses."""
    wait_active(api, lambda items: all(items.get(n, {}).get("status") == s for n, s in wanted.items()), timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    print(f"# load average before: {load_average()}", flush=True)
    with deployed(SERVICES) as (host, ozwald):
        ozwald.stop()
        start_with_stand_in_gpus(host, ozwald, SERVICES)
        api = Api(host.ip, ozwald.api_port, ozwald.system_key)
        client = SystemdClient(host.bus_address)
        version = host.exec(["podman", "--version"], check=True).stdout.split()[-1]
        for name in PORTS:
            rendered = ozwald.ozwald("render", f"{name}-floor", "--podman-version", ".".join(version.split(".")[:2]))
            if rendered.returncode != 0:
                raise RuntimeError(f"ozwald render {name}-floor: {rendered.stderr}")
            host.write_file(f"{RUNTIME_DIR}/ozbench-{name}.container",
                            rendered.stdout.replace(f"ozwald-{name}-floor", f"ozbench-{name}"))
        client.reload()
        swaps: list[Served] = []
        floor: list[Served] = []
        try:
            status, body = api.json("POST", "/srv/services/active/update/", [{"name": "a"}, {"name": "b"}])
            if status != 202:
                raise RuntimeError(f"update refused: {status} {body}")
            settle(api, {"a": "idle", "b": "idle"})
            _, plan = api.json("POST", "/srv/services/active/plan/", [{"name": "a"}, {"name": "b"}])
            groups = {e["name"]: e["fit"].get("exclusive_with") for e in plan}
            print(f"# swap groups from the plan: {groups}", flush=True)
            if groups != {"a": ["b"], "b": ["a"]}:
                raise RuntimeError(f"a and b should swap: {plan}")
            began = time.monotonic()
            for cycle in range(args.cycles + 1):  # the first is a warm-up, not counted
                warm, target = ("a", "b") if cycle % 2 == 0 else ("b", "a")
                for path in (("swap", "floor") if cycle % 4 < 2 else ("floor", "swap")):
                    if path == "swap":
                        api.json("POST", f"{ACTIVE}{warm}/wake?wait=60")
                        settle(api, {warm: "available", target: "idle"})
                        served = request(host.ip, PORTS[target])
                        settle(api, {warm: "idle", target: "available"})
                        api.json("POST", f"{ACTIVE}{target}/sleep?wait=60")
                        settle(api, {"a": "idle", "b": "idle"})
                        if cycle:
                            swaps.append(served)
                    else:
                        client.start_unit(f"ozbench-{warm}.service", timeout=120)
                        t0 = time.monotonic()
                        client.stop_unit(f"ozbench-{warm}.service", timeout=120)
                        client.start_unit(f"ozbench-{target}.service", timeout=120)
                        served = request(host.ip, FLOOR_PORTS[target], t0=t0)
                        client.stop_unit(f"ozbench-{target}.service", timeout=120)
                        if cycle:
                            floor.append(served)
                if cycle:
                    s, f = swaps[-1], floor[-1]
                    print(f"  cycle {cycle}: {warm} -> {target}: swap {s.outcome} "
                          f"{ms(s.first - s.t0) if s.first else '-'}, floor {f.outcome} "
                          f"{ms(f.first - f.t0) if f.first else '-'}", flush=True)
            elapsed = time.monotonic() - began
        finally:
            for name in PORTS:
                client.stop_unit(f"ozbench-{name}.service", timeout=120)
                host.guest_path(f"{RUNTIME_DIR}/ozbench-{name}.container").unlink(missing_ok=True)
            client.reload()
            api.json("POST", "/srv/services/active/update/", [])
            api.close()
            client.close()
    report(args.cycles, swaps, floor, elapsed)
    print(f"\n# load average after: {load_average()}")


def report(cycles: int, swaps: list[Served], floor: list[Served], elapsed: float) -> None:
    ours, base = first_bytes(swaps), first_bytes(floor)
    failed = [s.outcome for s in swaps if not s.ok]
    print(f"\n== {cycles} cycles in {elapsed:.0f} s")
    print("| what | swap through Ozwald | floor (stop A, start B by hand) | goal | |")
    print("|---|---|---|---|---|")
    if ours and base:
        print(first_byte_row("first byte of B while A is warm", ours, base, GOAL_ADDED_S))
    print(f"| requests refused/reset/failed | {len(failed)} of {len(swaps)} | "
          f"{sum(1 for s in floor if not s.ok)} of {len(floor)} | 0 | {met(not failed)} |")
    if failed:
        print(f"  failures: {failed[:10]}")
    print(f"  swap  {[round(x, 3) for x in ours]}")
    print(f"  floor {[round(x, 3) for x in base]}")


if __name__ == "__main__":
    main()
