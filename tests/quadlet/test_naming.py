# SPDX-License-Identifier: AGPL-3.0-or-later
from hypothesis import given
from hypothesis import strategies as st

from ozwald.config import parse_settings, resolve
from ozwald.quadlet import naming, render_unit
from ozwald.quadlet.escape import quote_word

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


def test_names_of_an_instance() -> None:
    assert (naming.container_name("a.b"), naming.unit_name("a.b"), naming.unit_filename("a.b")) == (
        "ozwald-a.b", "ozwald-a.b.service", "ozwald-a.b.container")
    assert naming.instance_of_unit("ozwald-a.b.service") == "a.b"
    assert naming.instance_of_filename("ozwald-a.b.container") == "a.b"
    for other in ("ozwald-.service", "redis.service", "ozwald-x.service.d", "ozwald-redis.service",
                  "ozwald-a:b.service", "ozwald-:proxy.service", "ozwald-x.timer"):
        assert naming.instance_of_unit(other) is None, other
    # An on-demand instance's socket and proxy belong to it; only the container's unit runs it.
    assert (naming.socket_name("a.b"), naming.proxy_name("a.b")) == ("ozwald-a.b.socket", "ozwald-a.b:proxy.service")
    for unit in ("ozwald-a.b.socket", "ozwald-a.b:proxy.service", "ozwald-a.b.service"):
        assert naming.instance_of_unit(unit) == "a.b"
        assert naming.is_container_unit(unit) == unit.endswith("b.service")
    assert naming.instance_of_filename("ozwald-x.container.tmp") is None


@given(TEXT)
def test_unquote_inverts_quote_word(text: str) -> None:
    assert naming.unquote_word(quote_word(text)) == text


def test_labels_read_back_from_a_rendered_unit() -> None:
    settings = parse_settings("services:\n  - name: s\n    image: x\n    labels: {team: 'a%b$c \"q\"'}\n"
                              "    profiles: {fast: {}}\n")
    spec = resolve(settings, "s", None, "fast")
    unit = render_unit(spec, "inst")
    labels = naming.unit_labels(unit.text)
    assert labels["service"] == "s" and labels["profile"] == "fast" and labels["instance"] == "inst"
    assert labels["spec-hash"] == spec.spec_hash
    assert naming.unit_label(unit.text, "variety") is None  # empty means unset
    assert "team" not in labels  # only ozwald.* labels
