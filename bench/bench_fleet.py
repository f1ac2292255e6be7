# SPDX-License-Identifier: AGPL-3.0-or-later
"""`ozwald fleet` over two provisioners against one `GET /srv/services/active/`, side by side in one run.

Two provisioners, each a real core (`Provisioner` on its own database of a real redis-server, host parts
stood in as in tests/support/provisioner_kit.py) behind its own real Waitress API server, each in its own
process (so that the client's threads and the servers do not share one interpreter lock), with 10 instance
statuses each. Measured from this process, interleaved, the order flipping every round:

- `get`: one `GET /srv/services/active/` to the first provisioner (`OzwaldClient.active_services()`, a fresh
  connection, as the fleet makes);
- `fleet`: `Fleet.status()` over both (per provisioner its statuses and host resources, all four asked at
  once): the work of `ozwald fleet` once its settings are loaded;
- `fleet-cli`: `ozwald fleet` in this process (`cli.main`, output discarded): settings file read and
  validated, the same queries, the table printed;
- `fleet+dead`: both, plus a third provisioner whose port refuses connections (a stopped provisioner);
- `fleet+silent`: both, plus a third that accepts connections and never answers, with `--timeout`
  (default 0.5 s): it costs its timeout, the others' answers do not wait longer.

Goal (issue 20): `fleet` ≤ 1.2x `get` (medians); one unreachable provisioner costs at most its timeout.

Run (no root needed, but under the shared lock):
    flock /tmp/ozwald-heavy.lock .venv/bin/python -m bench.bench_fleet [--rounds 200] [--timeout 0.5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

INSTANCES = 10
KEY = "bench-fleet-key-0123456789"
SERVICES = "services:\n  - name: llm\n    image: localhost/llm:1\n    resources: {memory_gb: 1}\n"


class DelayedCore:
    """A core whose every call first waits `delay` seconds: a provisioner that far away on the network
    (a round trip costs time, not CPU, so the wait sleeps)."""

    def __init__(self, core: object, delay: float) -> None:
        self.core = core
        self.delay = delay

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.core, name)
        if not callable(attr) or self.delay <= 0:
            return attr

        def delayed(*args: object, **kwargs: object) -> object:
            time.sleep(self.delay)
            return attr(*args, **kwargs)

        return delayed


def serve(redis_port: int, db: int, workdir: str, delay: float) -> None:
    """Child process: one provisioner core and its API server; prints the port, runs until stdin closes."""
    from ozwald.api import create_server
    from ozwald.records import ActiveService
    from ozwald.state.redis_conn import connect
    from tests.support.provisioner_kit import make_provisioner
    from tests.support.redis_server import RedisServer

    params = RedisServer("redis-server", Path(workdir))
    params.port = redis_port
    client = connect(params.params(db=db))
    client.execute("FLUSHDB")
    provisioner, reconciler = make_provisioner(SERVICES, client, Path(workdir))
    provisioner.start()
    reconciler.publish([ActiveService(name=f"llm-{i}", service="llm", status="available",
                                      info={"unit": f"ozwald-llm-{i}.service", "generation": 1})
                        for i in range(INSTANCES)])
    server = create_server(DelayedCore(provisioner, delay), KEY, host="127.0.0.1", port=0)
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.close()
    provisioner.stop()


@contextlib.contextmanager
def provisioners(count: int, delay: float = 0.0) -> Iterator[list[int]]:
    from tests.support.redis_server import RedisServer, redis_server_binary

    with tempfile.TemporaryDirectory(prefix="ozbench-fleet-") as tmp:
        redis = RedisServer(redis_server_binary(), Path(tmp))
        redis.start()
        children: list[subprocess.Popen[str]] = []
        try:
            ports = []
            for db in range(count):
                work = Path(tmp) / f"p{db}"
                work.mkdir()
                argv = [sys.executable, "-m", "bench.bench_fleet", "--serve", str(redis.port), str(db), str(work),
                        str(delay)]
                child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                children.append(child)
                assert child.stdout is not None
                ports.append(int(child.stdout.readline()))
            yield ports
        finally:
            for child in children:
                assert child.stdin is not None
                child.stdin.close()
                child.wait(timeout=30)
            redis.stop()


def settings_text(ports: list[int]) -> str:
    text = "hosts:\n  - {name: here, ip: 127.0.0.1}\nprovisioners:\n"
    for index, port in enumerate(ports):
        text += f"  - {{name: p{index}, host: here, cache: {{type: redis}}, api: {{port: {port}}}}}\n"
    return text + SERVICES


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=0.5, help="each provisioner's timeout (s)")
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0], metavar="MS",
                        help="network round trips to simulate, one run each (default: 0 = loopback, and 2 ms)")
    parser.add_argument("--serve", nargs=4, metavar=("REDIS_PORT", "DB", "DIR", "DELAY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), args.serve[2], float(args.serve[3]))
        return 0
    for delay in args.delays:
        measure(args, delay / 1000)
    return 0


def measure(args: argparse.Namespace, delay: float) -> None:
    from ozwald import cli
    from ozwald.client import OzwaldClient
    from ozwald.config import parse_settings
    from ozwald.fleet import Fleet
    from tests.support.redis_server import free_port

    silent = socket.socket()  # accepts (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    dead = free_port()  # nothing listens: refused at once
    print(f"\n== round trip {delay * 1000:g} ms; load average before: {os.getloadavg()}; {os.cpu_count()} CPUs",
          flush=True)
    with provisioners(2, delay) as ports, tempfile.TemporaryDirectory() as tmp:
        base = settings_text(ports)
        config = Path(tmp) / "fleet.yml"
        config.write_text(base)
        os.environ["OZWALD_SYSTEM_KEY"] = KEY
        os.environ["OZWALD_ENV_FILE"] = str(Path(tmp) / "absent.env")
        with_dead = parse_settings(base.replace("services:", "  - {name: dead, host: here, cache: {type: redis}, "
                                                f"api: {{port: {dead}}}}}\nservices:", 1))
        with_silent = parse_settings(base.replace("services:", "  - {name: silent, host: here, cache: {type: redis}, "
                                                  f"api: {{port: {silent.getsockname()[1]}}}}}\nservices:", 1))
        client = OzwaldClient(f"http://127.0.0.1:{ports[0]}", KEY, timeout=args.timeout)
        fleet = Fleet.from_settings(parse_settings(base), KEY, timeout=args.timeout)
        fleet_dead = Fleet.from_settings(with_dead, KEY, timeout=args.timeout)
        fleet_silent = Fleet.from_settings(with_silent, KEY, timeout=args.timeout)
        assert len(client.active_services()) == INSTANCES
        assert all(m.reachable and len(m.services) == INSTANCES for m in fleet.status())
        dead_status = fleet_dead.status()
        assert [m.reachable for m in dead_status] == [True, True, False], dead_status

        def cli_fleet() -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli.main(["fleet", "--config", str(config), "--timeout", str(args.timeout)]) == 0

        runs: dict[str, Callable[[], object]] = {"get": client.active_services, "fleet": fleet.status,
                                                 "fleet-cli": cli_fleet, "fleet+dead": fleet_dead.status}
        for call in runs.values():  # warm-up
            call()
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for index in range(args.rounds):
            order = list(runs) if index % 2 == 0 else list(reversed(runs))
            for name in order:
                samples[name].append(timed(runs[name]))
        silent_samples = [timed(fleet_silent.status) for _ in range(5)]
        silent_status = fleet_silent.status()
        assert [m.reachable for m in silent_status] == [True, True, False]
    silent.close()
    print(f"load average after: {os.getloadavg()}")
    get_median, _ = summary(samples["get"])
    print(f"{args.rounds} rounds, interleaved; ms (median, p90), ratio of medians to `get`")
    for name, values in samples.items():
        median, p90 = summary(values)
        print(f"  {name:<13} {median * 1000:7.2f} {p90 * 1000:7.2f}   {median / get_median:5.2f}x")
    median, p90 = summary(silent_samples)
    print(f"  {'fleet+silent':<13} {median * 1000:7.2f} {p90 * 1000:7.2f}   (timeout {args.timeout * 1000:g} ms; "
          f"5 rounds)")
    ratio = summary(samples["fleet"])[0] / get_median
    extra = median - args.timeout
    print(f"goal fleet <= 1.2x get: {ratio:.2f}x {'met' if ratio <= 1.2 else 'NOT met'}; one silent provisioner "
          f"costs its timeout + {extra * 1000:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
