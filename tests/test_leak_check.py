"""The exactness pass of patch verification (patching/leak_check.py: compiled for float32
and float64, numpy for float16), against the rule written out entry by entry: y has the bits of
where(x > 0, x, slope * x), except that at x = +-0 a zero of either sign passes; with
`require_finite`, every x is finite. A True where the rule fails would let a broken patch
through, so every planted fault must give False."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_doctor.patching.leak_check import leak_is_exact


def rule(x: np.ndarray, y: np.ndarray, slopes: np.ndarray, axis: int, require_finite: bool) -> bool:
    for idx in np.ndindex(*x.shape):
        v, w, s = x[idx], y[idx], slopes[idx[axis]]
        if require_finite and not np.isfinite(v):
            return False
        r = v if v > 0 else x.dtype.type(v * s)
        if r.tobytes() != w.tobytes() and not (v == 0 and w == 0):
            return False
    return True


def faithful(x: np.ndarray, slopes: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis] = slopes.size
    with np.errstate(invalid="ignore"):  # inf * -0.0
        return np.where(x > 0, x, x * slopes.reshape(shape))


def case(dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (3, 4, 7) with its 4 neurons on axis 1, a faithful y, and the slopes."""
    x = (np.random.default_rng(seed).standard_normal((3, 4, 7)) * 3).astype(dtype)
    slopes = np.array([-0.0, 0.01, -0.0, 0.25], dtype)  # live neurons -0.0, as verify passes them
    return x, faithful(x, slopes, 1), slopes


FAULTS = {
    "none": lambda x, y: None,
    "a changed value": lambda x, y: y.__setitem__((1, 1, 1), y[1, 1, 1] + 1),
    "-0.0 for +0.0 at a negative input": lambda x, y: (x.__setitem__((0, 0, 0), -2), y.__setitem__((0, 0, 0), -0.0)),
    "+0.0 for -0.0 at a negative input of a leaking neuron": lambda x, y: (
        x.__setitem__((0, 1, 0), -1e-44), y.__setitem__((0, 1, 0), 0.0)),
    "zeros of either sign at x = +-0 (allowed)": lambda x, y: (
        x.__setitem__((2, 2, 2), -0.0), y.__setitem__((2, 2, 2), 0.0), x.__setitem__((2, 3, 3), 0.0),
        y.__setitem__((2, 3, 3), -0.0)),
    "a non-zero at x = 0": lambda x, y: (x.__setitem__((2, 2, 2), 0.0), y.__setitem__((2, 2, 2), 1e-30)),
    "a NaN output": lambda x, y: y.__setitem__((1, 2, 3), np.nan),
    "a NaN input": lambda x, y: (x.__setitem__((1, 2, 3), np.nan), y.__setitem__((1, 2, 3), np.nan)),
    "an infinite input": lambda x, y: (x.__setitem__((0, 3, 1), np.inf), y.__setitem__((0, 3, 1), np.inf)),
    "the last entry differs": lambda x, y: y.__setitem__((-1, -1, -1), y[-1, -1, -1] * 2 + 1),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("require_finite", [True, False])
def test_the_pass_follows_the_rule(fault: str, dtype: type, require_finite: bool) -> None:
    x, y, slopes = case(dtype)
    axis = 1
    FAULTS[fault](x, y)
    want = rule(x, y, slopes, axis, require_finite)
    got = leak_is_exact(x, y, slopes, axis, require_finite)  # float16: numpy's road
    if fault == "a NaN input" and not require_finite and dtype is not np.float16:
        # the rule compares NaN bits (equal here); the pass gives no verdict on NaN, and the
        # entry-by-entry checks then count what they find: only a missed fault would be wrong
        assert got is False
        return
    assert got == want, fault


def test_any_neuron_axis_and_a_strided_input() -> None:
    x, y, slopes = case(np.float32, seed=4)
    x4, y4 = x.reshape(3, 4, 7, 1).transpose(3, 0, 2, 1), y.reshape(3, 4, 7, 1).transpose(3, 0, 2, 1)
    assert leak_is_exact(x4, y4, slopes, 3, True)  # neurons last, not contiguous
    y4 = y4.copy()
    y4[0, 2, 6, 3] = 5.0
    assert not leak_is_exact(x4, y4, slopes, 3, True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8),
       st.lists(st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1.0, np.nan, 3.0]), min_size=8, max_size=8),
       st.booleans())
def test_random_values_and_outputs_against_the_rule(values: list[float], tweaks: list[float],
                                                    require_finite: bool) -> None:
    x = np.array(values, np.float32).reshape(2, 2, 2)
    slopes = np.array([0.01, -0.0], np.float32)
    y = faithful(x, slopes, 1)
    for k, t in enumerate(tweaks):
        if k % 3 == 0:  # a third of the entries get an arbitrary output
            y.reshape(-1)[k] = t
    got = leak_is_exact(x, y, slopes, 1, require_finite)
    want = rule(x, y, slopes, 1, require_finite)
    assert not (got and not want), (x, y)  # never True where the rule fails
    if not (np.isnan(x).any() or np.isnan(y).any()):  # NaN: no verdict (False) is allowed
        assert got == want, (x, y)
