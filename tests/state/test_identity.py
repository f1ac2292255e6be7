# SPDX-License-Identifier: AGPL-3.0-or-later
import ipaddress

import pytest

from ozwald.config import parse_settings
from ozwald.config.model import Settings
from ozwald.state import ENV_VAR, IdentityError, Machine, select_provisioner

MULTI = parse_settings("""\
hosts:
  - {name: localhost, ip: 127.0.0.1}
  - {name: gpu1, ip: 10.0.0.11}
  - {name: gpu2, ip: 10.0.0.12}
provisioners:
  - {name: local, host: localhost, cache: {type: redis}}
  - {name: one, host: gpu1, cache: {type: redis}}
  - {name: two, host: gpu2, cache: {type: redis}}
""")


def machine(hostname: str, *addresses: str) -> Machine:
    return Machine(hostname, frozenset(ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", *addresses)))


def test_explicit_name_wins_over_everything() -> None:
    identity = select_provisioner(MULTI, "two", environ={ENV_VAR: "one"}, machine=machine("gpu1", "10.0.0.11"))
    assert identity.name == "two" and "--provisioner" in identity.reason
    assert identity.host is not None and identity.host.name == "gpu2"


def test_environment_variable_is_next() -> None:
    identity = select_provisioner(MULTI, environ={ENV_VAR: "one"}, machine=machine("elsewhere"))
    assert identity.name == "one" and ENV_VAR in identity.reason


def test_unknown_explicit_name_lists_candidates() -> None:
    with pytest.raises(IdentityError, match=r"'nope' \(from --provisioner\).*local, one, two") as caught:
        select_provisioner(MULTI, "nope", environ={}, machine=machine("gpu1"))
    assert caught.value.candidates == ("local", "one", "two")
    with pytest.raises(IdentityError, match=rf"\${ENV_VAR}"):
        select_provisioner(MULTI, environ={ENV_VAR: "nope"}, machine=machine("gpu1"))


def test_empty_environment_variable_is_ignored() -> None:
    assert select_provisioner(MULTI, environ={ENV_VAR: ""}, machine=machine("gpu2")).name == "two"


def test_hostname_match_beats_the_loopback_entry() -> None:
    identity = select_provisioner(MULTI, environ={}, machine=machine("gpu1"))
    assert identity.name == "one" and "hostname" in identity.reason


@pytest.mark.parametrize("hostname", ["GPU1", "gpu1.lan", "gpu1."])
def test_hostname_match_ignores_case_and_domain(hostname: str) -> None:
    assert select_provisioner(MULTI, environ={}, machine=machine(hostname)).name == "one"


def test_qualified_names_of_different_domains_do_not_match() -> None:
    settings = parse_settings("""\
hosts: [{name: gpu1.a.example, ip: 10.0.0.11}, {name: other, ip: 10.0.0.99}]
provisioners:
  - {name: one, host: gpu1.a.example, cache: {type: redis}}
  - {name: two, host: other, cache: {type: redis}}
""")
    with pytest.raises(IdentityError):
        select_provisioner(settings, environ={}, machine=machine("gpu1.b.example"))


def test_address_match() -> None:
    identity = select_provisioner(MULTI, environ={}, machine=machine("unrelated", "10.0.0.12", "fe80::1"))
    assert identity.name == "two" and "10.0.0.12" in identity.reason


def test_ipv6_address_match() -> None:
    settings = parse_settings("""\
hosts: [{name: a, ip: "fd00::a"}, {name: b, ip: "fd00::b"}]
provisioners:
  - {name: pa, host: a, cache: {type: redis}}
  - {name: pb, host: b, cache: {type: redis}}
""")
    assert select_provisioner(settings, environ={}, machine=machine("x", "fd00::b")).name == "pb"


def test_loopback_entry_wins_when_nothing_names_this_machine() -> None:
    identity = select_provisioner(MULTI, environ={}, machine=machine("laptop", "192.168.1.5"))
    assert identity.name == "local"


def test_single_entry_is_used_even_without_a_match() -> None:
    settings = parse_settings("""\
hosts: [{name: far, ip: 10.9.9.9}]
provisioners: [{name: only, host: far, cache: {type: redis}}]
""")
    identity = select_provisioner(settings, environ={}, machine=machine("laptop"))
    assert identity.name == "only" and "only" in identity.reason


def test_single_entry_with_undeclared_host() -> None:
    entry = {"name": "only", "host": "ghost", "cache": {"type": "redis"}}
    settings = Settings.model_validate({"provisioners": [entry]})
    identity = select_provisioner(settings, environ={}, machine=machine("laptop"))
    assert identity.name == "only" and identity.host is None


def test_no_match_among_several_lists_candidates() -> None:
    settings = parse_settings("""\
hosts: [{name: gpu1, ip: 10.0.0.11}, {name: gpu2, ip: 10.0.0.12}]
provisioners:
  - {name: one, host: gpu1, cache: {type: redis}}
  - {name: two, host: gpu2, cache: {type: redis}}
""")
    with pytest.raises(IdentityError) as caught:
        select_provisioner(settings, environ={}, machine=machine("laptop", "192.168.1.5"))
    message = str(caught.value)
    assert "one (host 'gpu1' 10.0.0.11)" in message and "two (host 'gpu2' 10.0.0.12)" in message
    assert "laptop" in message and "192.168.1.5" in message and "--provisioner" in message


def test_ambiguous_match_is_an_error() -> None:
    settings = parse_settings("""\
hosts: [{name: box, ip: 10.0.0.11}]
provisioners:
  - {name: a, host: box, cache: {type: redis}}
  - {name: b, host: box, cache: {type: redis}}
""")
    with pytest.raises(IdentityError, match="several provisioners match"):
        select_provisioner(settings, environ={}, machine=machine("box"))
    assert select_provisioner(settings, "b", environ={}, machine=machine("box")).name == "b"


def test_two_loopback_entries_are_ambiguous() -> None:
    settings = parse_settings("""\
hosts: [{name: localhost, ip: 127.0.0.1}]
provisioners:
  - {name: a, host: localhost, cache: {type: redis}}
  - {name: b, host: localhost, cache: {type: redis}}
""")
    with pytest.raises(IdentityError, match="several"):
        select_provisioner(settings, environ={}, machine=machine("laptop"))


def test_no_provisioners() -> None:
    with pytest.raises(IdentityError, match="no provisioners are configured"):
        select_provisioner(Settings(), environ={}, machine=machine("laptop"))


def test_detect_reads_this_machine() -> None:
    detected = Machine.detect()
    assert detected.hostname
    assert ipaddress.ip_address("127.0.0.1") in detected.addresses
