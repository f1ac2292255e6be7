# SPDX-License-Identifier: AGPL-3.0-or-later
import os

import pytest

from tests.quadlet.cases import GOLDEN, cases
from tests.support.quadlet import dryrun

CASES = cases()
UPDATE = os.environ.get("OZWALD_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_matches_golden_file(name: str) -> None:
    unit = CASES[name]
    path = GOLDEN / f"{name}.container"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(unit.text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with OZWALD_UPDATE_GOLDEN=1 and review it"
    assert unit.text == path.read_text(encoding="utf-8")


def test_every_golden_file_is_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.container")) == sorted(CASES)


def test_real_generator_accepts_every_golden_file() -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in GOLDEN.glob("*.container")}
    result = dryrun(files)
    assert result.returncode == 0, result.stderr
    generated = result.units()
    for name in files:
        service = name.removesuffix(".container") + ".service"
        assert service in generated, f"{service} vanished: {result.stderr}"
