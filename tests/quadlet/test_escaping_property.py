# SPDX-License-Identifier: AGPL-3.0-or-later
"""Property: any value Ozwald accepts reaches podman unchanged through the real Quadlet generator."""

import json
import shlex

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ozwald.config import Settings, resolve
from ozwald.quadlet import render_unit
from tests.support.quadlet import dryrun, podman_run_args

# Any Unicode text a YAML or JSON file can carry: no NUL, no lone surrogates.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
TRICKY = st.text(st.sampled_from(list("%$\\\"' \n\t\r{}[];=#&|`\x01\x7fAz0é模🙂")), max_size=20)
VALUE = st.one_of(TEXT, TRICKY)
ENV_KEY = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,15}\Z")
ARG = VALUE.filter(lambda a: a not in ("", ";"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=st.dictionaries(ENV_KEY, VALUE, max_size=6), label=VALUE, command=st.lists(ARG, min_size=1, max_size=4),
       health=st.lists(VALUE, min_size=1, max_size=3))
def test_values_round_trip_through_the_real_generator(env: dict[str, str], label: str, command: list[str],
                                                       health: list[str]) -> None:
    service = {"name": "prop", "image": "localhost/x:latest", "environment": env, "labels": {"user.note": label},
               "command": command, "health": {"command": health}}
    spec = resolve(Settings.model_validate({"services": [service]}), "prop")
    unit = render_unit(spec, "prop")
    result = dryrun({unit.filename: unit.text})
    assert result.returncode == 0, result.stderr
    argv = result.exec_start(unit.unit_name)
    args = podman_run_args(argv[: argv.index("localhost/x:latest")])
    assert dict(item.split("=", 1) for item in args["--env"]) == env
    assert "user.note=" + label in args["--label"]
    assert argv[argv.index("localhost/x:latest") + 1:] == command
    expected = health if len(health) > 1 else ["CMD-SHELL", shlex.quote(health[0])]
    assert json.loads(argv[argv.index("--health-cmd") + 1]) == expected
    sections = [line for line in unit.text.split("\n") if line.startswith("[")]
    assert sections == ["[Unit]", "[Container]", "[Service]"]
