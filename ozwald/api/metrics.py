# SPDX-License-Identifier: AGPL-3.0-or-later
"""GET /metrics: the Prometheus text format of the core's families, the API's own and the process's.

prometheus_client in single-process mode (no `PROMETHEUS_MULTIPROC_DIR`: one process serves the API) with a
registry of its own, not the library's global one, so two apps in one process (the tests) never share a
series. Everything is read at scrape time by collectors: the core's `metrics()`, the request counts, the
blocking queries waiting, and the library's process (CPU, RSS, open fds), platform and garbage-collector
collectors. Written in the classic text format (version 0.0.4), which every Prometheus since 2.0 reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ozwald.api.core import ProvisionerCore
from ozwald.provisioner.metrics import BY_NAME

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Counts(Protocol):
    """What the collector needs of `ozwald.api.app.RequestCounts` (app.py imports this module lazily)."""

    def snapshot(self) -> dict[tuple[str, str, int], int]: ...


class _Collector:
    def __init__(self, core: ProvisionerCore, counts: Counts, waiting: Callable[[], int], limit: int) -> None:
        self.core = core
        self.counts = counts
        self.waiting = waiting
        self.limit = limit

    def collect(self) -> Iterator[Metric]:
        yield from self.core.metrics()
        series = BY_NAME["ozwald_api_requests_total"]
        requests = CounterMetricFamily(series.name.removesuffix("_total"), series.help, labels=series.labels)
        for (method, route, code), count in sorted(self.counts.snapshot().items()):
            requests.add_metric([method, route, str(code)], count)
        yield requests
        for name, value in (("ozwald_api_blocking_queries_waiting", self.waiting()),
                            ("ozwald_api_blocking_queries_limit", self.limit)):
            yield GaugeMetricFamily(name, BY_NAME[name].help, value=value)


def exposition(core: ProvisionerCore, counts: Counts, waiting: Callable[[], int], limit: int
               ) -> Callable[[], tuple[bytes, str]]:
    """A function answering one scrape: (body, content type)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(core, counts, waiting, limit))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

    def scrape() -> tuple[bytes, str]:
        return generate_latest(registry), CONTENT_TYPE

    return scrape
