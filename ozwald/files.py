# SPDX-License-Identifier: AGPL-3.0-or-later
"""Crash-safe file writes and an inter-process lock, for every file Ozwald writes (state, unit files).

A reader (of the desired-state file, or systemd's generator reading a unit) must see either the old or
the new content, never a torn one, even after a power loss: hence temp file + fsync + rename + fsync of
the directory. The lock is `flock` on a separate file, because the data file itself is replaced by
rename and a lock on it would be lost. And a line written to a FIFO, which is how a swap gate opens.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text`, created with `mode` (set before the rename, so never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; without it the new name can vanish at a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path`, across processes and threads alike.

    Each call opens its own descriptor, so two threads of one process exclude each other as two
    processes do (flock locks belong to open file descriptions).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_fifo(path: str, line: str) -> bool:
    """Write one line to a FIFO that a process has open for reading; False (nothing written) when none has, or
    the FIFO does not exist: opening for writing never blocks."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader
            return False
        raise
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)
    return True
