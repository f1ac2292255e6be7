# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's Quadlet files on disk.

Ozwald owns the `ozwald-*.container` files in two Quadlet directories: the runtime one (gone at reboot)
and the persistent one (kept, for services with `persistent: true`). An on-demand instance's socket and proxy
are plain systemd units, in systemd's runtime or persistent directory likewise (with the drop-in that gates
the start of one that swaps with others); a persistent socket is linked into `sockets.target.wants/` as
`systemctl enable` would. Files are replaced atomically
(write a temporary file, fsync, rename), so systemd's generator never reads half a unit, and a file is
rewritten only when its bytes change, so an unchanged service causes no reload and no restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ozwald.files import atomic_write
from ozwald.quadlet.naming import (
    FILE_SUFFIX,
    UNIT_PREFIX,
    env_filename,
    instance_of_filename,
    proxy_name,
    socket_name,
    swap_dropin,
    unit_filename,
)
from ozwald.quadlet.render import RenderedUnit
from ozwald.quadlet.stored import StoredUnit

RUNTIME_DIR = Path("/run/containers/systemd")
PERSISTENT_DIR = Path("/etc/containers/systemd")


@dataclass
class SyncResult:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


class UnitStore:
    def __init__(self, runtime_dir: Path = RUNTIME_DIR, persistent_dir: Path = PERSISTENT_DIR,
                 systemd_runtime_dir: Path | None = None, systemd_persistent_dir: Path | None = None) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.persistent_dir = Path(persistent_dir)
        self.systemd_runtime_dir = Path(systemd_runtime_dir or _systemd_beside(self.runtime_dir))
        self.systemd_persistent_dir = Path(systemd_persistent_dir or _systemd_beside(self.persistent_dir))

    def _dir(self, persistent: bool) -> Path:
        return self.persistent_dir if persistent else self.runtime_dir

    def _systemd_dir(self, persistent: bool) -> Path:
        return self.systemd_persistent_dir if persistent else self.systemd_runtime_dir

    def existing(self) -> dict[str, StoredUnit]:
        """Every Ozwald unit file on disk, by instance name."""
        found: dict[str, StoredUnit] = {}
        for persistent in (False, True):
            directory = self._dir(persistent)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob(f"{UNIT_PREFIX}*{FILE_SUFFIX}")):
                instance = instance_of_filename(path.name)
                if instance is None:
                    continue
                try:
                    text = path.read_text(encoding="utf-8")
                    written_usec = path.stat().st_mtime_ns // 1000
                except FileNotFoundError:
                    continue
                try:
                    gate: str | None = (self._systemd_dir(persistent) / swap_dropin(instance)).read_text(
                        encoding="utf-8")
                except FileNotFoundError:
                    gate = None
                found[instance] = StoredUnit(instance, path, persistent, text, written_usec, gate)
        return found

    def write(self, unit: RenderedUnit, persistent: bool) -> bool:
        """Write one unit if its bytes changed; remove a copy left in the other directory. True if changed."""
        target = self._dir(persistent) / unit.filename
        other = self._dir(not persistent) / unit.filename
        self._write_env_file(unit, persistent)  # before the unit, so the generator never sees it missing
        changed = self._write_companions(unit, persistent)
        if other.exists():
            other.unlink()
            changed = True
        try:
            if target.read_text(encoding="utf-8") == unit.text:
                return changed
        except FileNotFoundError:
            pass
        atomic_write(target, unit.text, mode=0o600)  # environments may carry secrets: root only
        return True

    def _write_companions(self, unit: RenderedUnit, persistent: bool) -> bool:
        """The socket and proxy of an on-demand instance (none otherwise), in systemd's directory of the same
        kind, before the Quadlet file; copies in the other directory and links no longer wanted go."""
        changed = False
        wanted = {c.filename: c for c in unit.companions}
        for kind in (False, True):
            directory = self._systemd_dir(kind)
            for filename in (socket_name(unit.instance), proxy_name(unit.instance), swap_dropin(unit.instance)):
                path = directory / filename
                companion = wanted.get(filename) if kind == persistent else None
                if companion is None:
                    changed = _unlink(path) or changed
                elif not path.is_file() or path.read_text(encoding="utf-8") != companion.text:
                    atomic_write(path, companion.text, mode=0o644)
                    changed = True
                link = directory / "sockets.target.wants" / filename
                if companion is not None and companion.wanted_by is not None:
                    if not link.is_symlink():
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to(f"../{filename}")
                        changed = True
                elif filename.endswith(".socket"):
                    changed = _unlink(link) or changed
        return changed

    def _write_env_file(self, unit: RenderedUnit, persistent: bool) -> None:
        """The secret environment file next to the unit (0600), or none; the other directory keeps none."""
        target = self._dir(persistent) / env_filename(unit.instance)
        with contextlib.suppress(FileNotFoundError):
            (self._dir(not persistent) / env_filename(unit.instance)).unlink()
        if unit.env_file is None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return
        try:
            if target.read_text(encoding="utf-8") == unit.env_file:
                return
        except FileNotFoundError:
            pass
        atomic_write(target, unit.env_file, mode=0o600)

    def remove(self, instance: str) -> bool:
        removed = False
        for persistent in (False, True):
            directory = self._systemd_dir(persistent)
            for path in (directory / "sockets.target.wants" / socket_name(instance), directory / socket_name(instance),
                         directory / proxy_name(instance), directory / swap_dropin(instance)):
                removed = _unlink(path) or removed
            with contextlib.suppress(FileNotFoundError):
                (self._dir(persistent) / env_filename(instance)).unlink()
            path = self._dir(persistent) / unit_filename(instance)
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def sync(self, desired: Iterable[tuple[RenderedUnit, bool]]) -> SyncResult:
        """Make the files on disk exactly `desired` (unit, persistent): write changes, remove the rest.

        The caller reloads systemd once afterwards if `changed`, never once per unit.
        """
        result = SyncResult()
        wanted: set[str] = set()
        for unit, persistent in desired:
            wanted.add(unit.instance)
            (result.written if self.write(unit, persistent) else result.unchanged).append(unit.instance)
        for instance in self.existing():
            if instance not in wanted and self.remove(instance):
                result.removed.append(instance)
        return result


def _unlink(path: Path) -> bool:
    """Remove a file; a drop-in's directory goes with its last file."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    if path.parent.name.endswith(".d"):
        with contextlib.suppress(OSError):  # not empty (an operator's own drop-in): it stays
            path.parent.rmdir()
    return True


def _systemd_beside(quadlet_dir: Path) -> Path:
    """systemd's unit directory of the same kind: `<root>/run/systemd/system` for `<root>/run/containers/systemd`
    (a test host's root included); inside any other directory (a test's) a `systemd` folder."""
    if quadlet_dir.parts[-2:] == ("containers", "systemd"):
        return quadlet_dir.parent.parent / "systemd" / "system"
    return quadlet_dir / "systemd"
