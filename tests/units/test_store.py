# SPDX-License-Identifier: AGPL-3.0-or-later
import os
from pathlib import Path

from ozwald.config import parse_settings, resolve
from ozwald.quadlet import render_unit
from ozwald.units import UnitStore

SETTINGS = parse_settings("""\
services:
  - name: a
    image: localhost/a:latest
    environment: {X: "1"}
    profiles:
      two: {environment: {X: "2"}}
""")


def store(tmp_path: Path) -> UnitStore:
    return UnitStore(runtime_dir=tmp_path / "run", persistent_dir=tmp_path / "etc")


def test_sync_writes_then_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    units = store(tmp_path)
    unit = render_unit(resolve(SETTINGS, "a"), "a")
    first = units.sync([(unit, False)])
    assert first.written == ["a"] and first.changed
    path = tmp_path / "run" / "ozwald-a.container"
    assert path.read_text() == unit.text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    mtime = path.stat().st_mtime_ns
    second = units.sync([(unit, False)])
    assert second.unchanged == ["a"] and not second.changed
    assert path.stat().st_mtime_ns == mtime


def test_changed_spec_is_rewritten_and_hash_read_back(tmp_path: Path) -> None:
    units = store(tmp_path)
    units.sync([(render_unit(resolve(SETTINGS, "a"), "a"), False)])
    changed = render_unit(resolve(SETTINGS, "a", profile="two"), "a")
    assert units.sync([(changed, False)]).written == ["a"]
    assert units.existing()["a"].spec_hash == changed.spec_hash


def test_instances_that_are_gone_are_removed(tmp_path: Path) -> None:
    units = store(tmp_path)
    a = render_unit(resolve(SETTINGS, "a"), "a")
    b = render_unit(resolve(SETTINGS, "a"), "b")
    units.sync([(a, False), (b, True)])
    assert sorted(units.existing()) == ["a", "b"]
    assert units.existing()["b"].persistent
    result = units.sync([(a, False)])
    assert result.removed == ["b"]
    assert sorted(units.existing()) == ["a"]
    assert not (tmp_path / "etc" / "ozwald-b.container").exists()


def test_moving_between_runtime_and_persistent_keeps_one_copy(tmp_path: Path) -> None:
    units = store(tmp_path)
    a = render_unit(resolve(SETTINGS, "a"), "a")
    units.sync([(a, False)])
    assert units.sync([(a, True)]).written == ["a"]
    assert not (tmp_path / "run" / "ozwald-a.container").exists()
    assert (tmp_path / "etc" / "ozwald-a.container").exists()


def test_foreign_files_are_never_touched(tmp_path: Path) -> None:
    units = store(tmp_path)
    (tmp_path / "run").mkdir()
    foreign = tmp_path / "run" / "someone-else.container"
    foreign.write_text("[Container]\nImage=x\n")
    units.sync([])
    assert foreign.exists()


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    units = store(tmp_path)
    units.sync([(render_unit(resolve(SETTINGS, "a"), "a"), False)])
    assert os.listdir(tmp_path / "run") == ["ozwald-a.container"]
