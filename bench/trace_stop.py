# SPDX-License-Identifier: AGPL-3.0-or-later
"""Where the time of stopping N health-checked instances goes (issue 12): a diagnostic, not a benchmark.

Boots a test host with Ozwald deployed under bench/ozwald_trace.py (every probe), starts N `light-health`
instances, removes them, and prints: the time to an empty GET active, the reconciler's traced calls during
the stop (count, total and longest), the longest gaps of its thread, the D-Bus signals it parsed, and when
systemd ended each unit's stop (InactiveEnterTimestamp) against when Ozwald asked for it.

    .venv/bin/python -m bench.trace_stop [--instances 100] [--variant light-health]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections import Counter
from pathlib import Path

from bench.bench_scale import (
    ACTIVE,
    SERVICES,
    TRACE_GUEST,
    UPDATE,
    all_available,
    names,
    parse_trace,
    wait_api,
    with_resync,
)
from bench.deployed import Api, deployed, load_average, main_pid
from ozwald.systemd import SystemdClient
from tests.deploy.guest import UNIT, VENV
from tests.testhost.harness import TestHost

CGROUPS = ("init.scope", "system.slice", "system.slice/ozwald.service", "system.slice/systemd-journald.service",
           "system.slice/dbus.service", "system.slice/dbus-broker.service", "system.slice/ozwald-redis.service",
           "system.slice/redis-server.service", "machine.slice", "user.slice", "")


def cgroup_cpu(host: TestHost) -> dict[str, int]:
    """usage_usec of the guest's main cgroups (a parent keeps what its removed children used)."""
    script = "; ".join(f"echo {g or '/'} $(grep usage_usec /sys/fs/cgroup/{g}/cpu.stat 2>/dev/null)" for g in CGROUPS)
    out: dict[str, int] = {}
    for line in host.exec(["sh", "-c", script], timeout=60).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[0]] = int(parts[2])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--variant", default="light-health")
    parser.add_argument("--stop-with-systemctl", action="store_true")
    parser.add_argument("--stop-pipelined", action="store_true", help="StopUnit from this process")
    parser.add_argument("--enqueue", action="store_true", help="with --stop-pipelined: all sent at once")
    parser.add_argument("--no-podman-api", action="store_true", help="stop podman.socket/.service before the stop")
    parser.add_argument("--read-before", action="store_true", help="with --stop-pipelined: list_units first")
    parser.add_argument("--wave", type=int, default=0, help="with --stop-with-systemctl: units per systemctl stop")
    args = parser.parse_args()
    n = args.instances
    print(f"# load average before: {load_average()}", flush=True)
    with deployed(SERVICES, edit_config=lambda c: with_resync(c, "3600")) as (host, ozwald):
        host.write_file(TRACE_GUEST, (Path(__file__).parent / "ozwald_trace.py").read_text())
        ozwald.write_drop_in(f"[Service]\nExecStart=\nExecStart={VENV}/bin/python {TRACE_GUEST} serve\n")
        ozwald.restart()
        pid = main_pid(host, UNIT)
        api = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=60)
        items = [{"name": x, "service": args.variant} for x in names(args.variant, n)]
        t0 = time.monotonic()
        api.json("POST", UPDATE, items)
        t_up, _ = wait_api(api, all_available(n))
        print(f"# up {t_up - t0:.2f} s; load {load_average()}", flush=True)
        time.sleep(3)
        if args.no_podman_api:  # is the Podman API service (Ozwald's container-id lookups) in the way?
            print(host.exec(["sh", "-c", "ps -eo pid,etimes,args | grep 'podman system service' | grep -v grep; "
                                         "systemctl stop podman.socket podman.service; echo stopped $?"],
                            timeout=120).stdout, flush=True)
        t1 = time.monotonic()
        samples: list[tuple[float, str]] = []
        done = threading.Event()

        def sample() -> None:
            probe = Api(host.ip, ozwald.api_port, ozwald.system_key, timeout=60)
            while not done.is_set():
                with contextlib.suppress(Exception):
                    _, items = probe.json("GET", ACTIVE)
                    counts = Counter(f"{i['status']}:{i['info'].get('active_state')}" for i in items)
                    samples.append((time.monotonic() - t1, " ".join(f"{k}={v}" for k, v in sorted(counts.items()))))
                time.sleep(1.0)

        snapshots: list[tuple[float, str]] = []

        def processes() -> None:  # what runs in the guest while the units stop
            for at in (5.0, 20.0, 40.0):
                if done.wait(max(0.0, t1 + at - time.monotonic())):
                    return
                with contextlib.suppress(Exception):
                    out = host.exec(["sh", "-c", "ps -eo etimes=,stat=,args= | grep -E 'podman|conmon|crun|wget' "
                                                 "| grep -v grep; systemctl list-jobs --no-legend | "
                                                 "awk '{print 0, \"J\", \"job\", $3, $4}'"], timeout=30).stdout
                    kinds = Counter(" ".join(line.split()[2:5])[:70] for line in out.splitlines())
                    top = "\n".join(f"    {v:4d} {k}" for k, v in kinds.most_common(12))
                    snapshots.append((time.monotonic() - t1, top))

        threading.Thread(target=processes, daemon=True).start()
        poller = threading.Thread(target=sample, daemon=True)
        cpu_before = cgroup_cpu(host)
        poller.start()
        if args.stop_pipelined:  # Ozwald's own call (pipelined StopUnit), made from here: the reconciler not involved
            client = SystemdClient(host.bus_address)
            units = [f"ozwald-{x}.service" for x in names(args.variant, n)]
            if args.read_before:  # what a reconciler pass does right before its stops: GetAll of every unit
                client.list_units("ozwald-*")
            t_stop = time.monotonic()
            if args.enqueue:  # every StopUnit sent before any reply is read, as the reconciler does
                client.enqueue("stop", units)
                while any(u.active_state not in ("inactive", "failed") for u in client.list_units("ozwald-*")):
                    time.sleep(0.5)
                how = "pipelined (all sent, then the replies read)"
            else:
                client.stop(units, timeout=900)
                how = "one after another (each reply awaited)"
            print(f"# StopUnit of {n} units {how}, until all ended: {time.monotonic() - t_stop:.2f} s")
            client.close()
        if args.stop_with_systemctl:  # the same units stopped by hand: is it how they stop, or how they started?
            all_units = [f"ozwald-{x}.service" for x in names(args.variant, n)]
            wave = args.wave or n
            waves = "; ".join(f"systemctl stop {' '.join(all_units[i:i + wave])}" for i in range(0, n, wave))
            out = host.exec(["sh", "-c", f"t0=$(date +%s%N); {waves}; echo $? $t0 $(date +%s%N)"],
                            timeout=900).stdout.split()
            print(f"# systemctl stop of Ozwald's {n} units in waves of {wave}: rc {out[0]}, "
                  f"{(int(out[2]) - int(out[1])) / 1e9:.2f} s")
        api.json("POST", UPDATE, [])
        t_down, _ = wait_api(api, lambda items: items == [])
        done.set()
        cpu_after = cgroup_cpu(host)
        print("# CPU seconds used during the stop, by cgroup (the guest's)")
        for group, usec in sorted(cpu_after.items(), key=lambda kv: -(kv[1] - cpu_before.get(kv[0], 0))):
            used = (usec - cpu_before.get(group, 0)) / 1e6
            if used >= 0.05:
                print(f"  {used:8.2f}  {group}")
        first = f"ozwald-{names(args.variant, 1)[0]}.service"
        print(host.exec(["sh", "-c", f"journalctl -o short-monotonic --no-pager -n 40 -u {first}"],
                        timeout=60).stdout[-5000:])
        warnings = host.exec(["sh", "-c", "journalctl -p warning -o cat --no-pager --since '-10min' | "
                                          "sed -E 's/[0-9a-f]{12,}/ID/g; s/[0-9]+/N/g' | sort | uniq -c | sort -rn "
                                          "| head -15"], timeout=60).stdout
        print(f"# guest warnings (last 10 min, numbers and ids folded):\n{warnings}")
        for at, what in snapshots:
            print(f"# guest processes {at:.1f} s after the POST (count, command):\n{what}")
        for at, what in samples:
            print(f"  {at:7.2f} {what}")
        stops = host.exec(["sh", "-c", "journalctl -o short-monotonic --no-pager _PID=1 | "
                                       "grep -E 'ozwald-lighthealth.*(Stopped|Deactivated|Failed|Consumed)' | "
                                       "grep -v Consumed"], timeout=60).stdout.splitlines()
        ends = sorted(float(line.split("]")[0].strip("[ ")) - t1 for line in stops)
        ends = [e for e in ends if e >= 0]
        if ends:
            print(f"# systemd logged {len(ends)} stop ends: first {ends[0]:.2f} s, "
                  f"median {ends[len(ends) // 2]:.2f} s, last {ends[-1]:.2f} s after the POST")
        print(f"# down (GET active empty) {t_down - t1:.2f} s; load {load_average()}", flush=True)
        time.sleep(3)
        raw = host.exec(["journalctl", f"_PID={pid}", "-o", "cat", "--no-pager"], timeout=60).stdout
        Path("/tmp/trace_stop.log").write_text(raw)
        events = [e for e in parse_trace(raw) if e.start >= t1 - 0.01]
        summary: dict[str, list[float]] = {}
        for e in events:
            summary.setdefault(f"{e.thread} {e.what}", []).append(e.end - e.start)
        print("# traced calls during the stop: count, total s, max s")
        for key, values in sorted(summary.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {key:<70} {len(values):6d} {sum(values):8.3f} {max(values):7.3f}")
        recon = sorted((e for e in events if e.thread.startswith("ozwald-reconciler") or "Reconciler" in e.what),
                       key=lambda e: e.start)
        print("# reconciler timeline (top-level calls, offsets from the POST)")
        last_end = t1
        for e in recon:
            if e.what in ("Reconciler._pass", "Reconciler._read_dirty", "Reconciler._remove_stopped",
                          "Reconciler._publish", "SystemdClient.reload", "Reconciler._container_ids_of"):
                print(f"  {e.start - t1:8.3f} {e.end - t1:8.3f} ({e.end - e.start:6.3f}) gap {e.start - last_end:6.3f}"
                      f"  {e.thread} {e.what} {e.extra}")
                last_end = max(last_end, e.end)
        print(host.exec(["journalctl", "-u", UNIT, "-n", "60", "--no-pager", "-o", "cat"], timeout=60).stdout[-6000:])


if __name__ == "__main__":
    main()
