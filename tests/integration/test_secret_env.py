# SPDX-License-Identifier: AGPL-3.0-or-later
"""Secret environment values reach the container through a 0600 env file, never the generated service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.driver_kit import PYTHON_HEALTH, Drivers, drivers_for, http_json, server, settings_for
from tests.quadlet.cases import ADVERSARIAL_ENV
from tests.testhost.harness import TestHost

# Every adversarial value that fits on one line, plus what an env-file parser might mistake.
SECRETS = {key: value for key, value in ADVERSARIAL_ENV.items() if "\n" not in value and "\r" not in value}
SECRETS |= {"HASH_FIRST": "#not a comment", "EQUALS": "a=b=c", "HF_TOKEN": "hf_0123456789abcdefSECRET"}


@pytest.fixture(scope="module")
def drivers(testhost: TestHost) -> Iterator[Drivers]:
    with drivers_for(testhost) as kit:
        yield kit


def test_secret_values_reach_the_container_and_nothing_else(drivers: Drivers) -> None:
    environment: dict[str, object] = {key: {"value": value} for key, value in SECRETS.items() if key != "HF_TOKEN"}
    environment |= {"HF_TOKEN": SECRETS["HF_TOKEN"], "MODEL_NAME": "visible"}  # secret by its name alone
    settings = settings_for(server("sec", ports=["8004:8000"], health=PYTHON_HEALTH, environment=environment))
    unit = drivers.install(settings, "sec")
    assert drivers.systemd.start_unit(unit.unit_name, timeout=60).ok
    try:
        env = http_json(drivers.host.url(8004, "/env"))
        for key, value in SECRETS.items():
            assert env.get(key) == value, key
        assert env["MODEL_NAME"] == "visible"
        shown = drivers.host.systemctl("show", "-p", "ExecStart", "-p", "Environment", unit.unit_name).stdout
        generated = drivers.host.exec(["cat", f"/run/systemd/generator/{unit.unit_name}"]).stdout
        for text in (shown, generated, unit.text):
            assert SECRETS["HF_TOKEN"] not in text and "#not a comment" not in text and "a=b=c" not in text
        assert "--env-file" in shown
        mode = drivers.host.exec(["stat", "-c", "%a", "/run/containers/systemd/ozwald-sec.env"]).stdout.strip()
        assert mode == "600"
    finally:
        drivers.systemd.stop_unit(unit.unit_name, timeout=60)
        drivers.remove("sec")
    assert drivers.host.exec(["ls", "/run/containers/systemd"]).stdout.split() == []
