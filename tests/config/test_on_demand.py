# SPDX-License-Identifier: AGPL-3.0-or-later
"""`on_demand`: what it resolves to, and the settings check_config refuses (file, line, and why)."""

from __future__ import annotations

import pytest

from ozwald.config import parse_settings, resolve
from tests.config.test_loader import issues_of


def test_true_takes_the_defaults_and_false_on_a_profile_turns_it_off() -> None:
    settings = parse_settings("""\
services:
  - name: chat
    image: x
    ports: ["8090:8000"]
    on_demand: true
    profiles:
      always: {on_demand: false}
      quick: {on_demand: {idle_stop: 30s, backend_port: 19000}}
""")
    base = resolve(settings, "chat")
    assert base.on_demand is not None and (base.on_demand.idle_stop, base.on_demand.backend_for(8090)) == (600, 18090)
    assert resolve(settings, "chat", None, "always").on_demand is None
    quick = resolve(settings, "chat", None, "quick").on_demand
    assert quick is not None and (quick.idle_stop, quick.backend_for(8090)) == (30, 19000)


def test_the_default_backend_port_stays_a_port() -> None:
    settings = parse_settings("services:\n  - name: s\n    image: x\n    ports: ['60000:80']\n    on_demand: true\n")
    on_demand = resolve(settings, "s").on_demand
    assert on_demand is not None and on_demand.backend_for(60000) == 50000


@pytest.mark.parametrize(("ports", "says"), [
    ("[]", "it publishes 0"),
    ('["8090:8000", "8091:8001"]', "it publishes 2"),
    ('["8090:8000/udp"]', "it publishes 8090:8000/udp"),
    ('["127.0.0.1::8000"]', "it publishes 127.0.0.1::8000/tcp"),
])
def test_an_on_demand_service_needs_exactly_one_tcp_port_with_a_host_port(ports: str, says: str) -> None:
    [issue] = issues_of(f"services:\n  - name: s\n    image: x\n    ports: {ports}\n    on_demand: true\n")
    assert issue.startswith("ozwald.yml:5: services[0].on_demand: an on-demand service needs exactly one "
                            "published TCP port with a host port")
    assert says in issue


def test_the_level_that_turns_it_on_is_named_with_the_combination() -> None:
    [issue] = issues_of("""\
services:
  - name: s
    image: x
    varieties:
      cpu-only: {ports: ["8090:8000", "9000:9000"]}
      nvidia: {ports: ["8090:8000"]}
    profiles:
      lazy:
        on_demand: {idle_stop: 1m}
""")
    assert issue.startswith("ozwald.yml:9: services[0].profiles.lazy.on_demand:")
    assert issue.endswith("it publishes 2 (variety 'cpu-only', profile 'lazy')")


def test_the_backend_port_cannot_be_the_public_one() -> None:
    [issue] = issues_of("services:\n  - name: s\n    image: x\n    ports: ['8090:8000']\n"
                        "    on_demand: {backend_port: 8090}\n")
    assert issue == ("ozwald.yml:5: services[0].on_demand: on_demand.backend_port 8090 is the public port; the "
                     "container needs another one behind the proxy")


@pytest.mark.parametrize(("value", "says"), [
    ("{idle_stop: 0}", "greater than 0"),
    ("{idle_stop: soon}", "invalid duration"),
    ("{backend_port: 70000}", "less than or equal to 65535"),
    ("{swap_drain: -1s}", "swap_drain"),
    ("{idel_stop: 5m}", "unknown key"),
])
def test_bad_values_are_named(value: str, says: str) -> None:
    issues = issues_of(f"services:\n  - name: s\n    image: x\n    ports: ['8090:8000']\n    on_demand: {value}\n")
    assert any(issue.startswith("ozwald.yml:5: services[0].on_demand") and says in issue for issue in issues), issues


def test_swap_drain_is_what_ozwald_does_not_what_runs_so_outside_the_spec_hash() -> None:
    def spec(on_demand: str) -> tuple[str, float]:
        resolved = resolve(parse_settings(
            f"services:\n  - name: s\n    image: x\n    ports: ['8090:8000']\n    on_demand: {on_demand}\n"), "s")
        assert resolved.on_demand is not None
        return resolved.spec_hash, resolved.on_demand.swap_drain

    default, longer, idle = spec("true"), spec("{swap_drain: 2m}"), spec("{idle_stop: 5m}")
    assert (default[1], longer[1]) == (30, 120)
    assert longer[0] == default[0]  # changing it restarts nothing
    assert idle[0] != default[0]  # idle_stop is in the proxy's unit: a change of what runs
