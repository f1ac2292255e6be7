# SPDX-License-Identifier: AGPL-3.0-or-later
"""Reporting of detection failures without flooding the journal.

Snapshots run on every API request, so a GPU that fell off the bus would otherwise log the same
warning many times a second. Each distinct failure is logged once at its full level and afterwards
only at DEBUG; an unexpected exception (a bug, not a hardware condition) always carries its
traceback the first time so it can be fixed rather than silently degraded around.
"""

from __future__ import annotations

import logging
import threading


def describe(exc: BaseException) -> str:
    """A one-line reason for an exception from a vendor library.

    pynvml's `__str__` calls back into libnvidia-ml to translate the code, which can itself fail
    when the library is half-loaded, so the formatting is guarded.
    """
    try:
        text = str(exc).strip()
    except Exception:  # a broken __str__ must not turn a degraded read into a crash
        text = ""
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


class FailureLog:
    """Logs each (key, message) pair once at its real level, then at DEBUG.

    The memory is bounded: should messages vary without end (an exception text carrying an
    address, say), it is cleared and failures are simply reported once more.
    """

    MAX_REMEMBERED = 1024

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _first_time(self, key: str, message: str) -> bool:
        with self._lock:
            if (key, message) in self._seen:
                return False
            if len(self._seen) >= self.MAX_REMEMBERED:
                self._seen.clear()
            self._seen.add((key, message))
            return True

    def expected(self, key: str, message: str, level: int = logging.WARNING) -> None:
        """A condition the vendor library reports on purpose (no driver, GPU lost, unsupported)."""
        self._logger.log(level if self._first_time(key, message) else logging.DEBUG, "%s: %s", key, message)

    def unexpected(self, key: str, exc: BaseException) -> str:
        """An exception the library is not documented to raise, or a bug here; returns the reason."""
        message = f"unexpected {describe(exc)}"
        if self._first_time(key, message):
            self._logger.error("%s: %s", key, message, exc_info=exc)
        else:
            self._logger.debug("%s: %s", key, message)
        return message

    def forget(self, key_prefix: str) -> None:
        """Re-arm logging after recovery, so the next failure is reported again."""
        with self._lock:
            self._seen = {entry for entry in self._seen if not entry[0].startswith(key_prefix)}
