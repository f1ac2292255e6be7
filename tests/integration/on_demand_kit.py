# SPDX-License-Identifier: AGPL-3.0-or-later
"""What the on-demand scenarios share between the simulated host and the test host: the status check, the
simulator's settle, and the real reconciler driving the test host's systemd, its sockets, swap gates and
connection counts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ozwald import sockets
from ozwald.config import Settings
from ozwald.files import write_fifo
from ozwald.provisioner.reconciler import Reconciler
from ozwald.quadlet.naming import swap_gate
from ozwald.records import ActiveService, DesiredInstance
from tests.integration.driver_kit import Drivers, drivers_for
from tests.integration.test_reconciler import Desired, Published
from tests.support.simrun import SimRun
from tests.testhost.harness import TestHost

Statuses = dict[str, ActiveService]
Settle = Callable[[Callable[[Statuses], bool]], Statuses]


def is_status(statuses: Statuses, **wanted: str) -> bool:
    return all(name in statuses and statuses[name].status == status for name, status in wanted.items())


def sim_settle(sim: SimRun) -> Settle:
    """Lets simulated time pass (at most 60 s) until the published statuses pass a check."""

    def settle(check: Callable[[Statuses], bool]) -> Statuses:
        for _ in range(600):
            if check({s.name: s for s in sim.published}):
                return {s.name: s for s in sim.published}
            sim.run(0.1)
        raise AssertionError(f"did not settle: {sim.published}")

    return settle


@contextlib.contextmanager
def reconciler_on(testhost: TestHost, settings: Settings
                  ) -> Iterator[tuple[Drivers, Reconciler, Desired, Published]]:
    """The real reconciler, run here, on the test host's systemd: it knocks on the guest's sockets, opens the
    guest's swap gates and counts connections in the guest's network namespace. Everything is removed after."""
    desired, published = Desired(), Published()
    with drivers_for(testhost) as drivers:
        reconciler = Reconciler(settings, desired, drivers.systemd, drivers.store, published,
                                podman=drivers.podman, journal_prefix=drivers.journal_prefix, resync_interval=30,
                                knock=lambda _, port, timeout: sockets.knock(testhost.ip, port, timeout),
                                open_gate=lambda name: write_fifo(str(testhost.guest_path(swap_gate(name))), "go"),
                                count_connections=lambda port: sockets.connections_to(
                                    port, Path(f"/proc/{testhost.pid1}/net")))
        reconciler.start()
        try:
            yield drivers, reconciler, desired, published
        finally:
            desired.set()
            reconciler.wake(desired.value.generation)
            published.wait(lambda s: not s, timeout=60)
            reconciler.stop()


def host_post(reconciler: Reconciler, desired: Desired) -> Callable[..., None]:
    def post(*instances: DesiredInstance) -> None:
        desired.set(*instances)
        reconciler.wake(desired.value.generation)

    return post


def host_settle(published: Published) -> Settle:
    def settle(check: Callable[[Statuses], bool]) -> Statuses:
        settled: Statuses = published.wait(check, timeout=60)
        return settled

    return settle
