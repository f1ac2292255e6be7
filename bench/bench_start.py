# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reload → healthy through Ozwald's drivers, against `systemctl daemon-reload && systemctl start`.

Both paths start the same rendered units (the test server with a 1 s health check and Notify=healthy)
in the same booted test host, alternating round by round, and each is timed from the reload until
every unit's start job has finished (that is, every container is healthy). Run as root:

    .venv/bin/python -m bench.bench_start [--rounds 5] [--units 1 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from ozwald.config import Settings, resolve
from ozwald.quadlet import render_unit
from ozwald.systemd import SystemdClient
from ozwald.units import UnitStore
from tests.testhost.harness import TestHost

HEALTH = {"http": "http://127.0.0.1:8000/health", "probe": "python3", "interval": "1s", "timeout": "2s"}


def units_for(count: int) -> list:  # type: ignore[type-arg]
    services = [{"name": f"b{i}", "image": "localhost/ozwald-testserver:latest", "health": HEALTH, "restart": "no"}
                for i in range(count)]
    settings = Settings.model_validate({"services": services})
    return [render_unit(resolve(settings, s["name"]), s["name"]) for s in services]


def ozwald_path(host: TestHost, client: SystemdClient, store: UnitStore, units: list) -> float:  # type: ignore[type-arg]
    for unit in units:
        store.write(unit, persistent=False)
    started = time.perf_counter()
    client.reload()
    outcomes = client.start([u.unit_name for u in units], timeout=300)
    elapsed = time.perf_counter() - started
    assert all(o.result == "done" for o in outcomes.values()), outcomes
    return elapsed


def systemctl_path(host: TestHost, units: list) -> float:  # type: ignore[type-arg]
    for unit in units:
        host.write_file(f"/run/containers/systemd/{unit.filename}", unit.text)
    names = " ".join(u.unit_name for u in units)
    script = (f"s=$(date +%s%N); systemctl daemon-reload && systemctl start {names}; rc=$?; "
              f"e=$(date +%s%N); echo $rc $((e - s))")
    out = host.exec(["sh", "-c", script], timeout=300, check=True).stdout.split()
    assert out[0] == "0", out
    return int(out[1]) / 1e9


def clean(host: TestHost, client: SystemdClient, store: UnitStore, units: list) -> None:  # type: ignore[type-arg]
    client.stop([u.unit_name for u in units], timeout=300)
    for unit in units:
        store.remove(unit.instance)
    client.reload()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--units", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    with TestHost() as host:
        store = UnitStore(runtime_dir=host.guest_path("/run/containers/systemd"),
                          persistent_dir=host.guest_path("/etc/containers/systemd"))
        client = SystemdClient(host.bus_address)
        # Warm-up: first container start pays for storage setup in both paths alike.
        warm = units_for(1)
        ozwald_path(host, client, store, warm)
        clean(host, client, store, warm)
        for count in args.units:
            units = units_for(count)
            ours: list[float] = []
            base: list[float] = []
            for round_no in range(args.rounds):
                order = [("ozwald", ours), ("systemctl", base)]
                if round_no % 2:
                    order.reverse()
                for name, sink in order:
                    if name == "ozwald":
                        sink.append(ozwald_path(host, client, store, units))
                    else:
                        sink.append(systemctl_path(host, units))
                    clean(host, client, store, units)
            ours_median, base_median = statistics.median(ours), statistics.median(base)
            print(f"{count:>3} unit(s): ozwald median {ours_median:.3f} s, systemctl median {base_median:.3f} s, "
                  f"ratio {ours_median / base_median:.2f}x  (ozwald {[round(x, 3) for x in ours]}, "
                  f"systemctl {[round(x, 3) for x in base]})")
        client.close()


if __name__ == "__main__":
    main()
