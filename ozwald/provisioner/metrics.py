# SPDX-License-Identifier: AGPL-3.0-or-later
"""The provisioner's Prometheus metric families, built at scrape time from what it already holds in memory.

`SERIES` is the catalogue: every family Ozwald exports (the API's own, in `ozwald.api.metrics`, included),
with its type, help and labels. The README's list, the Grafana dashboard's test and promtool check it.
`families(inputs)` is a pure function of `ScrapeInputs`, which `Provisioner.metrics()` gathers (the
published statuses, the observer's counts, the reconciler's passes, a resource snapshot, reservations and
profiling results), so nothing is counted on the API's hot path and a scrape costs only itself.

Names follow Prometheus' rules: base units (bytes, seconds), `_total` for counters, `_info` for a constant 1
with labels, `_timestamp_seconds` for a time since the epoch, no colons. Labels are bounded: an instance's
name, service, variety and profile come from the desired set and the settings, status from a fixed list, GPU
ids from the host; never a reason, a hash or a time.

prometheus_client is imported only here and in the API's metrics module, and only when metrics are on
(`api.metrics`, default true), so a provisioner with them off does not load it.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ozwald import __version__
from ozwald.provisioner.observe import Observed
from ozwald.records import ActiveService
from ozwald.resources.models import GpuInfo
from ozwald.state import ProfileResult

MIB = 1024 * 1024
STATUSES = ("starting", "available", "idle", "failed", "stopping")  # one series each per instance


class Series(NamedTuple):
    name: str  # as exposed: a counter's with `_total`
    kind: str  # gauge, counter, histogram
    help: str
    labels: tuple[str, ...] = ()


# An instance's label is `name` (as in the API), not `instance`: Prometheus gives every scraped series the
# target's `instance` label and would rename Ozwald's to `exported_instance`.
INSTANCE = ("name", "service")
CONFIG = ("service", "variety", "profile")
GPU = ("gpu", "uuid", "vendor")

SERIES: tuple[Series, ...] = (
    Series("ozwald_build_info", "gauge", "Ozwald's version and Python's, as labels; always 1.",
           ("version", "python_version")),
    Series("ozwald_instance_status", "gauge",
           "1 for the instance's current status, 0 for the others (one series per status).",
           ("name", "service", "variety", "profile", "status")),
    Series("ozwald_instance_restarts_total", "counter",
           "Automatic restarts systemd made of the instance after a crash, since this provisioner started.",
           INSTANCE),
    Series("ozwald_instance_failures_total", "counter", "Times the instance became failed.", INSTANCE),
    Series("ozwald_instance_last_transition_timestamp_seconds", "gauge",
           "When the instance's status last changed, in seconds since the epoch.", INSTANCE),
    Series("ozwald_instance_change_to_available_seconds", "histogram",
           "Seconds from a desired change (a posted set that starts, restarts or changes the instance) "
           "until the instance is available.", ("service",)),
    Series("ozwald_desired_generation", "gauge", "The generation of the stored desired set."),
    Series("ozwald_applied_generation", "gauge",
           "The newest desired generation whose instances have all settled (available, idle or failed)."),
    Series("ozwald_reconcile_passes_total", "counter", "Reconcile passes the reconciler completed."),
    Series("ozwald_reconcile_last_pass_duration_seconds", "gauge", "How long the last reconcile pass took."),
    Series("ozwald_gpu_memory_total_bytes", "gauge", "The GPU's memory.", GPU),
    Series("ozwald_gpu_memory_used_bytes", "gauge", "The GPU's memory in use, as its driver reports it.", GPU),
    Series("ozwald_gpu_memory_reserved_bytes", "gauge",
           "GPU memory the desired instances claim on this GPU for admission (declared vram_gb, else the "
           "measured footprint plus the margin).", GPU),
    Series("ozwald_footprint_ram_peak_bytes", "gauge",
           "The newest measured RAM peak of a service/variety/profile (profiling).", CONFIG),
    Series("ozwald_footprint_vram_peak_bytes", "gauge",
           "The newest measured VRAM peak per GPU of a service/variety/profile (profiling).", CONFIG),
    Series("ozwald_footprint_ready_seconds", "gauge",
           "Seconds from the container's start to ready in the newest profiling run.", CONFIG),
    Series("ozwald_footprint_fresh", "gauge",
           "1 if the newest measurement was made under the spec the settings give now, 0 if it is stale.",
           CONFIG),
    Series("ozwald_footprint_measured_timestamp_seconds", "gauge",
           "When the newest measurement finished, in seconds since the epoch.", CONFIG),
    # The API's own (ozwald.api.metrics), listed here so that the catalogue is complete.
    Series("ozwald_api_requests_total", "counter", "API requests answered, by route and status code.",
           ("method", "route", "code")),
    Series("ozwald_api_blocking_queries_waiting", "gauge",
           "GET /srv/services/active/?after= requests waiting for a change now."),
    Series("ozwald_api_blocking_queries_limit", "gauge", "How many blocking queries may wait at once."),
)
BY_NAME = {series.name: series for series in SERIES}


@dataclass(frozen=True)
class Footprint:
    """The newest measured profiling result of one service/variety/profile, and whether it is fresh."""

    result: ProfileResult
    fresh: bool


@dataclass(frozen=True)
class ScrapeInputs:
    statuses: Sequence[ActiveService]
    observed: Observed
    passes: int | None = None
    last_pass_seconds: float | None = None
    desired_generation: int | None = None
    gpus: Sequence[GpuInfo] = ()
    reserved_vram_mib: dict[str, float] = field(default_factory=dict)  # GPU id → MiB
    footprints: Sequence[Footprint] = ()


def _gauge(name: str) -> GaugeMetricFamily:
    series = BY_NAME[name]
    return GaugeMetricFamily(series.name, series.help, labels=series.labels)


def _counter(name: str) -> CounterMetricFamily:
    series = BY_NAME[name]
    return CounterMetricFamily(series.name.removesuffix("_total"), series.help, labels=series.labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))  # as Prometheus' clients write `le`


def _label(value: object) -> str:
    return "" if value is None else str(value)


def newest_footprints(results: Iterable[ProfileResult]) -> list[ProfileResult]:
    """The newest measured result per (service, variety, profile); `results` come newest first."""
    newest: dict[tuple[str, str | None, str | None], ProfileResult] = {}
    for result in results:
        if result.outcome == "measured":
            newest.setdefault(result.config_key, result)
    return list(newest.values())


def families(inputs: ScrapeInputs) -> list[Metric]:
    out: list[Metric] = []
    build = _gauge("ozwald_build_info")
    build.add_metric([__version__, platform.python_version()], 1)
    out.append(build)

    status = _gauge("ozwald_instance_status")
    for service in inputs.statuses:
        labels = [service.name, service.service, _label(service.variety), _label(service.profile)]
        for name in STATUSES:
            status.add_metric([*labels, name], 1 if service.status == name else 0)
    out.append(status)

    restarts, failures = _counter("ozwald_instance_restarts_total"), _counter("ozwald_instance_failures_total")
    transition = _gauge("ozwald_instance_last_transition_timestamp_seconds")
    for name, counts in sorted(inputs.observed.instances.items()):
        restarts.add_metric([name, counts.service], counts.restarts_total)
        failures.add_metric([name, counts.service], counts.failures_total)
        transition.add_metric([name, counts.service], counts.transition_at)
    out += [restarts, failures, transition]

    series = BY_NAME["ozwald_instance_change_to_available_seconds"]
    starts = HistogramMetricFamily(series.name, series.help, labels=series.labels)
    for service_name, histogram in sorted(inputs.observed.start_seconds.items()):
        starts.add_metric([service_name], [(_le(le), n) for le, n in histogram.cumulative()], histogram.total)
    out.append(starts)

    for name, value in (("ozwald_desired_generation", inputs.desired_generation),
                        ("ozwald_applied_generation", inputs.observed.applied_generation),
                        ("ozwald_reconcile_passes_total", inputs.passes),
                        ("ozwald_reconcile_last_pass_duration_seconds", inputs.last_pass_seconds)):
        if value is not None:  # unknown is left out rather than reported as 0
            family = _counter(name) if BY_NAME[name].kind == "counter" else _gauge(name)
            family.add_metric([], value)
            out.append(family)

    total, used = _gauge("ozwald_gpu_memory_total_bytes"), _gauge("ozwald_gpu_memory_used_bytes")
    reserved = _gauge("ozwald_gpu_memory_reserved_bytes")
    for gpu in inputs.gpus:
        labels = [gpu.id, _label(gpu.uuid), gpu.vendor]
        if gpu.vram_total_mib is not None:
            total.add_metric(labels, gpu.vram_total_mib * MIB)
        if gpu.vram_used_mib is not None:
            used.add_metric(labels, gpu.vram_used_mib * MIB)
        reserved.add_metric(labels, inputs.reserved_vram_mib.get(gpu.id, 0.0) * MIB)
    out += [total, used, reserved]

    ram, vram = _gauge("ozwald_footprint_ram_peak_bytes"), _gauge("ozwald_footprint_vram_peak_bytes")
    ready, fresh = _gauge("ozwald_footprint_ready_seconds"), _gauge("ozwald_footprint_fresh")
    measured = _gauge("ozwald_footprint_measured_timestamp_seconds")
    for footprint in inputs.footprints:
        result = footprint.result
        labels = [result.service, _label(result.variety), _label(result.profile)]
        if result.ram_peak_mib is not None:
            ram.add_metric(labels, result.ram_peak_mib * MIB)
        if result.vram_peak_mib:
            vram.add_metric(labels, max(result.vram_peak_mib.values()) * MIB)
        if result.ready_s is not None:
            ready.add_metric(labels, result.ready_s)
        fresh.add_metric(labels, 1 if footprint.fresh else 0)
        measured.add_metric(labels, result.finished_at.timestamp())
    out += [ram, vram, ready, fresh, measured]
    return out
