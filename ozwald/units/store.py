# SPDX-License-Identifier: AGPL-3.0-or-later
"""Ozwald's Quadlet files on disk.

Ozwald owns the `ozwald-*.container` files in two Quadlet directories: the runtime one (gone at reboot)
and the persistent one (kept, for services with `persistent: true`). Files are replaced atomically
(write a temporary file, fsync, rename), so systemd's generator never reads half a unit, and a file is
rewritten only when its bytes change, so an unchanged service causes no reload and no restart.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ozwald.quadlet.render import UNIT_PREFIX, RenderedUnit

RUNTIME_DIR = Path("/run/containers/systemd")
PERSISTENT_DIR = Path("/etc/containers/systemd")
SUFFIX = ".container"
_SPEC_HASH = re.compile(r'^Label="ozwald\.spec-hash=([0-9a-f]+)"$', re.MULTILINE)


@dataclass(frozen=True)
class StoredUnit:
    instance: str
    path: Path
    persistent: bool
    text: str

    @property
    def spec_hash(self) -> str | None:
        match = _SPEC_HASH.search(self.text)
        return match.group(1) if match else None


@dataclass
class SyncResult:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


class UnitStore:
    def __init__(self, runtime_dir: Path = RUNTIME_DIR, persistent_dir: Path = PERSISTENT_DIR) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.persistent_dir = Path(persistent_dir)

    def _dir(self, persistent: bool) -> Path:
        return self.persistent_dir if persistent else self.runtime_dir

    def existing(self) -> dict[str, StoredUnit]:
        """Every Ozwald unit file on disk, by instance name."""
        found: dict[str, StoredUnit] = {}
        for persistent in (False, True):
            directory = self._dir(persistent)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob(f"{UNIT_PREFIX}*{SUFFIX}")):
                instance = path.name[len(UNIT_PREFIX):-len(SUFFIX)]
                try:
                    text = path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    continue
                found[instance] = StoredUnit(instance, path, persistent, text)
        return found

    def write(self, unit: RenderedUnit, persistent: bool) -> bool:
        """Write one unit if its bytes changed; remove a copy left in the other directory. True if changed."""
        target = self._dir(persistent) / unit.filename
        other = self._dir(not persistent) / unit.filename
        changed = False
        if other.exists():
            other.unlink()
            changed = True
        try:
            if target.read_text(encoding="utf-8") == unit.text:
                return changed
        except FileNotFoundError:
            pass
        _atomic_write(target, unit.text)
        return True

    def remove(self, instance: str) -> bool:
        removed = False
        for persistent in (False, True):
            path = self._dir(persistent) / f"{UNIT_PREFIX}{instance}{SUFFIX}"
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


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # environments may carry tokens; only root (the generator) reads these
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
