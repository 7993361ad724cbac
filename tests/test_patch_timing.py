"""PairTimer: patch verification times the models on its own runs (warm-up left out, only
batches of the first size, topped up to TIMING_RUNS counted runs, the fastest kept)."""

from __future__ import annotations

import types

import pytest

from relu_doctor.patching import verify
from relu_doctor.patching.verify import TIMING_RUNS, PairTimer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake clock that only the timed runs advance: timings are exact, whatever the load."""
    now = [0.0]
    monkeypatch.setattr(verify, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def _run(seconds: float, clock: list[float], calls: list[float]):
    def run() -> float:
        calls.append(seconds)
        clock[0] += seconds
        return seconds
    return run


def test_one_batch_is_topped_up_and_the_warm_up_is_not_counted(clock: list[float]) -> None:
    timer = PairTimer()
    a: list[float] = []
    b: list[float] = []
    assert timer.run(0, _run(0.5, clock, a), 8) == 0.5  # the warm-up: slow, not counted
    timer.run(1, _run(0.5, clock, b), 8)
    timer.top_up(_run(0.1, clock, a), _run(0.2, clock, b))
    assert len(a) == len(b) == 1 + TIMING_RUNS
    assert timer.seconds() == pytest.approx((0.1, 0.2))
    assert timer.rows == 8


def test_only_batches_of_the_first_size_count_and_the_fastest_wins(clock: list[float]) -> None:
    timer = PairTimer()
    calls: list[float] = []
    for seconds, rows in [(0.5, 8), (0.4, 8), (0.2, 8), (0.3, 8), (0.1, 3)]:
        timer.run(0, _run(seconds, clock, calls), rows)
        timer.run(1, _run(seconds + 0.05, clock, calls), rows)
    timer.top_up(_run(1.0, clock, calls), _run(1.0, clock, calls))  # 3 counted runs each: nothing more runs
    assert len(calls) == 10
    assert timer.seconds() == pytest.approx((0.2, 0.25))  # the 3-row batch is not a batch of 8


def test_nothing_timed_gives_zero() -> None:
    assert PairTimer().seconds() == (0.0, 0.0)
