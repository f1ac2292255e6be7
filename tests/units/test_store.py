# SPDX-License-Identifier: AGPL-3.0-or-later
import os
from dataclasses import replace
from pathlib import Path

from ozwald.config import parse_settings, resolve
from ozwald.quadlet import render_unit
from ozwald.quadlet.on_demand import render_swap_gate
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


ON_DEMAND = parse_settings("""\
services:
  - name: od
    image: localhost/a:latest
    ports: ["8090:8000"]
    on_demand: true
    profiles:
      plain: {on_demand: false}
""")


def test_an_on_demand_instance_has_its_socket_and_proxy_in_systemds_directory(tmp_path: Path) -> None:
    units = store(tmp_path)
    unit = render_unit(resolve(ON_DEMAND, "od"), "od")
    assert units.write(unit, False)
    socket, proxy = (tmp_path / "run" / "systemd" / name for name in ("ozwald-od.socket", "ozwald-od:proxy.service"))
    assert socket.read_text() == unit.companions[0].text and proxy.read_text() == unit.companions[1].text
    assert not units.write(unit, False)  # unchanged: nothing rewritten
    assert set(units.existing()) == {"od"}  # the instance is its .container; the companions go with it
    assert units.remove("od")
    assert not socket.exists() and not proxy.exists()


def test_a_persistent_socket_is_enabled_and_moves_with_the_instance(tmp_path: Path) -> None:
    units = store(tmp_path)
    unit = render_unit(resolve(ON_DEMAND, "od"), "od")
    persistent = render_unit(resolve(ON_DEMAND.model_copy(update={"services": tuple(
        s.model_copy(update={"persistent": True}) for s in ON_DEMAND.services)}), "od"), "od")
    units.write(unit, False)
    assert units.write(persistent, True)
    link = tmp_path / "etc" / "systemd" / "sockets.target.wants" / "ozwald-od.socket"
    assert link.is_symlink() and os.readlink(link) == "../ozwald-od.socket" and link.resolve().is_file()
    assert not (tmp_path / "run" / "systemd" / "ozwald-od.socket").exists()
    assert units.write(unit, False)  # back to runtime: the link and the persistent copies go
    assert not link.is_symlink() and not (tmp_path / "etc" / "systemd" / "ozwald-od.socket").exists()


def test_turning_on_demand_off_removes_the_companions(tmp_path: Path) -> None:
    units = store(tmp_path)
    units.write(render_unit(resolve(ON_DEMAND, "od"), "od"), False)
    assert units.write(render_unit(resolve(ON_DEMAND, "od", None, "plain"), "od"), False)
    assert list((tmp_path / "run" / "systemd").iterdir()) == []


def test_systemds_directories_sit_beside_quadlets_in_a_root() -> None:
    root = Path("/proc/1/root")
    units = UnitStore(runtime_dir=root / "run/containers/systemd", persistent_dir=root / "etc/containers/systemd")
    assert (units.systemd_runtime_dir, units.systemd_persistent_dir) == (root / "run/systemd/system",
                                                                         root / "etc/systemd/system")
    assert UnitStore().systemd_runtime_dir == Path("/run/systemd/system")


def test_a_swap_gate_is_a_drop_in_that_changes_without_touching_the_quadlet_file(tmp_path: Path) -> None:
    units = store(tmp_path)
    unit = render_unit(resolve(ON_DEMAND, "od"), "od")
    units.write(unit, False)
    container = tmp_path / "run" / "ozwald-od.container"
    mtime = container.stat().st_mtime_ns
    gated = replace(unit, swap_gate=render_swap_gate("od", ("other",)))
    assert units.write(gated, False)
    dropin = tmp_path / "run" / "systemd" / "ozwald-od.service.d" / "50-ozwald-swap.conf"
    assert dropin.read_text() == gated.companions[-1].text
    assert container.stat().st_mtime_ns == mtime  # its start time still tells which spec runs
    assert units.existing()["od"].swap_gate == dropin.read_text()
    own = dropin.parent / "90-operator.conf"
    own.write_text("[Service]\nEnvironment=A=1\n")
    assert units.write(unit, False)  # out of the group: the gate goes, the operator's drop-in stays
    assert not dropin.exists() and own.exists() and units.existing()["od"].swap_gate is None
    own.unlink()
    units.write(gated, False)
    assert units.remove("od")
    assert not (tmp_path / "run" / "systemd" / "ozwald-od.service.d").exists()
