# SPDX-License-Identifier: AGPL-3.0-or-later
"""Each settings key is declared once (on `Layer`); merge, hash, checks and the README derive from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ozwald.config import ConfigError, parse_settings, resolve
from ozwald.config.keys import Merge, markdown_table
from ozwald.config.model import CONTAINER_ONLY_KEYS, LAYER_KEYS

ROOT = Path(__file__).resolve().parents[2]

# Two different values for every key, as YAML flow text. A new key must be added here, or
# test_every_key_has_samples fails: that is the point.
SAMPLES: dict[str, tuple[str, str]] = {
    "image": ("img-a", "img-b"),
    "environment": ("{A: '1'}", "{A: '2'}"),
    "command": ("[serve, a]", "[serve, b]"),
    "entrypoint": ("[/a]", "[/b]"),
    "ports": ("['8000']", "['8001']"),
    "volumes": ("['/a:/a']", "['/a:/b']"),
    "devices": ("['nvidia.com/gpu=0']", "['nvidia.com/gpu=1']"),
    "health": ("{command: ['true']}", "{command: ['false']}"),
    "restart": ("always", "'no'"),
    "restart_delay": ("7", "8s"),
    "start_timeout": ("91", "92"),
    "stop_timeout": ("31", "32"),
    "min_uptime": ("6", "7s"),
    "shm_size": ("1g", "2g"),
    "labels": ("{team: a}", "{team: b}"),
    "resources": ("{cpus: 1}", "{cpus: 2}"),
    "persistent": ("true", "false"),
    "on_demand": ("{idle_stop: 30s}", "{idle_stop: 60s}"),
}
# What a key needs beside it to be valid: an on-demand service publishes one TCP port.
BESIDE: dict[str, str] = {"on_demand": "    ports: ['8000:80']"}


def _spec_hash(key: str | None, value: str | None, where: str = "service", beside: str = "") -> str:
    """The spec hash of service `s` in profile `p`, with `key: value` set at `where` (or nowhere)."""
    lines = ["services:", "  - name: s", *([beside] if beside else [])]
    if key != "image" or where != "service":
        lines.append("    image: base")
    if key and where == "service":
        lines.append(f"    {key}: {value}")
    lines.append(f"    profiles: {{p: {{{key}: {value}}}}}" if key and where == "profile" else "    profiles: {p: {}}")
    return resolve(parse_settings("\n".join(lines) + "\n"), "s", None, "p").spec_hash


def test_every_key_has_samples() -> None:
    assert set(SAMPLES) == set(LAYER_KEYS)


@pytest.mark.parametrize("key", sorted(LAYER_KEYS))
@pytest.mark.parametrize("where", ["service", "profile"])
def test_every_key_enters_the_spec_hash(key: str, where: str) -> None:
    assert LAYER_KEYS[key].hashed
    first, second = SAMPLES[key]
    beside = BESIDE.get(key, "")
    unset = _spec_hash(None, None, beside=beside)
    a, b = _spec_hash(key, first, where, beside), _spec_hash(key, second, where, beside)
    assert len({a, b}) == 2, f"changing {key} does not change the spec hash"
    if key != "persistent":  # false is its default, so it may equal the unset hash
        assert unset not in (a, b), f"setting {key} does not change the spec hash"


def test_a_key_hashed_when_set_leaves_the_hash_of_specs_without_it_unchanged() -> None:
    """Upgrading to a release with a new key must not restart every running instance."""
    spec = resolve(parse_settings("services:\n  - name: s\n    image: x\n"), "s")
    later = [name for name, key in LAYER_KEYS.items() if key.hashed_when_set]
    assert later == ["on_demand"]
    assert not set(later) & set(spec.canonical())
    turned_off = resolve(parse_settings("services:\n  - name: s\n    image: x\n    on_demand: false\n"), "s")
    assert turned_off.on_demand is None and turned_off.spec_hash == spec.spec_hash


def test_min_uptime_resolves_to_seconds_with_a_default_of_5() -> None:
    settings = parse_settings("services:\n  - name: s\n    image: x\n    profiles:\n      slow: {min_uptime: 2m}\n")
    assert resolve(settings, "s").min_uptime == 5.0
    assert resolve(settings, "s", None, "slow").min_uptime == 120.0


def test_merge_rules_come_from_the_declarations() -> None:
    settings = parse_settings("""\
services:
  - name: s
    image: x
    environment: {A: base, B: base}
    labels: {l1: base}
    resources: {cpus: 2, memory_gb: 4}
    command: [base]
    profiles:
      p:
        environment: {B: profile}
        labels: {l2: profile}
        resources: {cpus: 3}
        command: [profile]
""")
    spec = resolve(settings, "s", None, "p")
    assert spec.env == {"A": "base", "B": "profile"}
    assert dict(spec.labels) == {"l1": "base", "l2": "profile"}
    assert (spec.resources.cpus, spec.resources.memory_gb) == (3, 4)
    assert spec.command == ("profile",)
    assert {k for k, key in LAYER_KEYS.items() if key.merge is not Merge.MOST_SPECIFIC} == {
        "environment", "labels", "resources"}


@pytest.mark.parametrize("key", CONTAINER_ONLY_KEYS)
def test_container_only_keys_are_refused_on_other_services(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"services\[0\]\.{key}: not allowed on a 'source-files' service"):
        parse_settings(f"services:\n  - name: s\n    type: source-files\n    {key}: {SAMPLES[key][0]}\n")


def test_readme_settings_table_is_generated_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^\| key \| merge \|.*?\n(?=\n)", readme, re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no settings table"
    assert match.group(0) == markdown_table(LAYER_KEYS), (
        "README.md's settings table is out of date; paste the output of: python -c 'from ozwald.config.keys "
        "import markdown_table; from ozwald.config.model import LAYER_KEYS; print(markdown_table(LAYER_KEYS))'")
