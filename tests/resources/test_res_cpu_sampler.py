# SPDX-License-Identifier: AGPL-3.0-or-later
"""The CPU sampler keeps measurement off the request path."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ozwald.resources import CpuLoadSampler


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def test_reading_never_waits_for_a_slow_sample() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow_sample() -> float:
        calls.append(1)
        if len(calls) > 1:  # the priming call returns at once; the first real sample hangs
            release.wait(10)
        return 50.0

    sampler = CpuLoadSampler(interval=0.01, sample=slow_sample)
    sampler.start()
    try:
        assert wait_for(lambda: len(calls) >= 2), "the thread reached the hanging sample"
        started = time.perf_counter()
        for _ in range(1000):
            assert sampler.load_percent is None
        assert time.perf_counter() - started < 0.1
    finally:
        release.set()
        sampler.stop()
    assert not sampler.running


def test_publishes_samples_and_skips_the_priming_call() -> None:
    values = iter([99.0, 10.0, 20.0, 30.0] + [30.0] * 1000)
    sampler = CpuLoadSampler(interval=0.01, sample=lambda: next(values))
    with sampler:
        assert wait_for(lambda: sampler.load_percent == 30.0)
        assert sampler.age_seconds is not None and sampler.age_seconds < 5
    assert not sampler.running


def test_values_are_clamped() -> None:
    sampler = CpuLoadSampler(interval=0.01, sample=lambda: 250.0)
    with sampler:
        assert wait_for(lambda: sampler.load_percent is not None)
        assert sampler.load_percent == 100.0


def test_a_failing_sample_keeps_the_thread_alive(caplog: pytest.LogCaptureFixture) -> None:
    values: list[float | Exception] = [0.0, 40.0, RuntimeError("boom"), *[60.0] * 1000]
    outcomes: Iterator[float | Exception] = iter(values)

    def sample() -> float:
        value = next(outcomes)
        if isinstance(value, Exception):
            raise value
        return value

    sampler = CpuLoadSampler(interval=0.01, sample=sample)
    with sampler:
        assert wait_for(lambda: sampler.load_percent == 60.0)
        assert sampler.running
    assert "CPU load sample failed" in caplog.text


def test_stop_is_prompt_even_with_a_long_interval() -> None:
    sampler = CpuLoadSampler(interval=3600.0, sample=lambda: 1.0)
    sampler.start()
    assert sampler.running
    started = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - started < 1.0
    assert not sampler.running
    sampler.stop()  # idempotent


def test_start_is_idempotent_and_thread_is_daemon() -> None:
    sampler = CpuLoadSampler(interval=3600.0, sample=lambda: 1.0)
    sampler.start()
    first = sampler._thread
    sampler.start()
    try:
        assert sampler._thread is first
        assert first is not None and first.daemon
    finally:
        sampler.stop()


def test_real_psutil_sampler_produces_a_value() -> None:
    with CpuLoadSampler(interval=0.05) as sampler:
        assert sampler.load_percent is None or 0.0 <= sampler.load_percent <= 100.0
        assert wait_for(lambda: sampler.load_percent is not None)
        load = sampler.load_percent
        assert load is not None and 0.0 <= load <= 100.0
