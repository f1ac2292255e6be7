# SPDX-License-Identifier: AGPL-3.0-or-later
"""contrib/grafana/ozwald.json queries only series Ozwald exports, and only labels those series have; the
README's list of series is the catalogue's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ozwald.provisioner.metrics import SERIES

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "ozwald.json"
# prometheus_client's process collector (ozwald.api.metrics registers it), and the labels Prometheus adds
PROCESS = {"process_resident_memory_bytes": (), "process_cpu_seconds_total": (), "process_open_fds": ()}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def exported() -> dict[str, set[str]]:
    """Every series name a scrape holds (histograms as their _bucket/_sum/_count), with its labels."""
    names: dict[str, set[str]] = {}
    for series in SERIES:
        labels = set(series.labels) | TARGET_LABELS
        if series.kind == "histogram":
            names[f"{series.name}_bucket"] = labels | {"le"}
            names[f"{series.name}_sum"] = names[f"{series.name}_count"] = labels
        else:
            names[series.name] = labels
    names.update({name: set(labels) | TARGET_LABELS for name, labels in PROCESS.items()})
    return names


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations
    if text.startswith("label_values("):  # Grafana's variable query: label_values(series, label)
        inner = text[len("label_values("):].rstrip(") ")
        series, _, label = inner.rpartition(",")
        return {series.strip()}, labels | {label.strip()}
    names = {name for name in re.findall(r"\b([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
             if name not in KEYWORDS and not re.fullmatch(r"\d.*", name)}
    return names, labels


def test_the_dashboard_uses_only_exported_series_and_their_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    known = exported()
    found = list(expressions(dashboard))
    assert len(found) >= 10
    used: set[str] = set()
    for expr in found:
        names, labels = referenced(expr)
        assert names, f"no series in {expr!r}"
        for name in names:
            assert name in known, f"{name} (in {expr!r}) is not a series Ozwald exports"
            assert labels <= known[name] | {"le"}, f"{expr!r}: labels {labels - known[name]} not on {name}"
        used |= names
    # the panels the issue asks for: statuses over time, restarts, start times, memory per GPU, footprints
    assert {"ozwald_instance_status", "ozwald_instance_restarts_total", "ozwald_gpu_memory_used_bytes",
            "ozwald_instance_change_to_available_seconds_bucket", "ozwald_footprint_ram_peak_bytes"} <= used


def test_the_checker_catches_a_series_that_is_not_exported() -> None:
    names, labels = referenced('sum by (instance, foo) (rate(ozwald_instance_restart_count{job=~"$job"}[5m]))')
    assert names == {"ozwald_instance_restart_count"} and labels == {"instance", "foo", "job"}
    assert "ozwald_instance_restart_count" not in exported()


def test_it_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "ozwald" and dashboard["panels"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_readme_lists_every_series_as_catalogued() -> None:
    readme = (DASHBOARD.parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- metrics-table:", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    listed = [tuple(cell.strip().strip("`") for cell in row.strip("|").split(" | ")) for row in rows]
    assert listed == [(s.name, s.kind, ", ".join(s.labels) or "–", s.help) for s in SERIES]
