# SPDX-License-Identifier: AGPL-3.0-or-later
"""Run `work(0)` … `work(n - 1)` in threads released at once; what any of them raised fails the test."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(work: Callable[[int], object], threads: int, timeout: float = 120.0) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            barrier.wait()
            work(worker)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in pool), f"a worker still runs after {timeout:g} s"
    if errors:
        raise errors[0]
