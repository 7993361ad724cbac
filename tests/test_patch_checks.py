"""SiteCheck.add against a per-entry reference written out by hand, on small arrays with
planted faults (a changed live value, a flipped zero sign, a wrong leak, a dead neuron that
stays zero, NaNs, values over a relu6 bound)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from relu_doctor.patching.plan import CHANNEL, LAYER, SitePatch
from relu_doctor.patching.verify import SiteCheck


def _reference(x: np.ndarray, y: np.ndarray, axis: int, p: SitePatch) -> dict[str, int]:
    out = dict.fromkeys(["live_entries", "live_changed", "live_bits_changed", "leak_entries", "leak_wrong",
                         "negative_inputs", "leaking", "over_bound"], 0)
    for idx in np.ndindex(*x.shape):
        xi, yi = float(x[idx]), float(y[idx])
        dead = idx[axis] in p.dead
        if p.mode == CHANNEL and not dead:
            relu = xi if xi > 0 else 0.0
            out["live_entries"] += 1
            same = yi == relu or (math.isnan(yi) and math.isnan(relu))
            out["live_changed"] += not same
            if math.isfinite(xi) and xi != 0:
                out["live_bits_changed"] += np.float32(yi).tobytes() != np.float32(relu).tobytes()
        else:
            leak = xi if xi > 0 else float(np.float32(xi) * np.float32(p.slope))
            out["leak_entries"] += 1
            ok = yi == leak or (math.isnan(yi) and math.isnan(leak)) or abs(yi - leak) <= 1e-6 * abs(leak)
            out["leak_wrong"] += not ok
        if dead and xi < 0:
            out["negative_inputs"] += 1
            out["leaking"] += yi != 0
        if p.upper is not None and xi > p.upper:
            out["over_bound"] += 1
    return out


def _patch(mode: str, upper: float | None) -> SitePatch:
    return SitePatch(index=0, name="s", kind="relu6" if upper else "relu", op="aten.relu", axis=1, rank=3,
                     neurons=4, dead=(1, 3), upper=upper, mode=mode, slope=0.01)


@pytest.mark.parametrize("mode", [CHANNEL, LAYER])
@pytest.mark.parametrize("upper", [None, 6.0])
def test_counters_match_the_entry_by_entry_reference(mode: str, upper: float | None) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 4).astype(np.float32)
    x[0, 0, 0] = 0.0
    x[1, 2, 3] = np.nan
    p = _patch(mode, upper)
    dead = np.isin(np.arange(4), p.dead).reshape(1, 4, 1)
    leaky = dead if mode == CHANNEL else np.ones_like(dead)
    y = np.where(x > 0, x, np.where(leaky, x * np.float32(0.01), np.float32(0)))
    y[0, 0, 1] += 1.0  # a live value changed
    y[2, 2, 2] = -0.0 if x[2, 2, 2] < 0 else y[2, 2, 2]  # a zero of the other sign (not a change)
    y[1, 1, :] = 0.0  # a dead neuron that does not leak
    y[2, 3, 4] *= 2  # a wrong leak (or a live change, in layer mode)
    check = SiteCheck(p)
    check.add(x, y, axis=1)
    want = _reference(x, y, 1, p)
    assert {k: getattr(check, k) for k in want} == want
    assert check.calls == 1


def test_a_faithful_leak_has_no_problems() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    p = _patch(CHANNEL, None)
    dead = np.isin(np.arange(4), p.dead).reshape(1, 4, 1)
    y = np.where(x > 0, x, np.where(dead, x * np.float32(0.01), np.float32(0)))
    check = SiteCheck(p)
    check.add(x, y, axis=1)
    assert check.problems() == []
    assert check.live_entries == 12 and check.leak_entries == 12


@pytest.mark.parametrize("mode", [CHANNEL, LAYER])
@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("nonfinite", [False, True])
def test_a_faithful_leak_from_torch_matches_the_reference(mode: str, axis: int, nonfinite: bool) -> None:
    """What torch's prelu / leaky_relu really return (the exact path of SiteCheck._exact when
    nothing differs; a NaN or infinite input sends the check entry by entry): the same counts."""
    import torch

    rng = np.random.default_rng(2)
    shape = [3, 5, 5]
    shape[axis] = 4
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x[0, 0, 0] = -0.0
    if nonfinite:
        x[1, 1, 1], x[2, 2, 2] = np.nan, -np.inf
    p = replace(_patch(mode, None), axis=axis)
    t = torch.from_numpy(x)
    if mode == CHANNEL:
        y = torch.prelu(t.movedim(axis, 1), torch.from_numpy(p.slopes())).movedim(1, axis).numpy()
    else:
        y = torch.nn.functional.leaky_relu(t, p.slope).numpy()
    check = SiteCheck(p)
    check.add(x, y, axis=axis)
    want = _reference(x, y, axis, p)
    assert {k: getattr(check, k) for k in want} == want
    assert (check.problems() == []) != (nonfinite and mode == CHANNEL)  # prelu(-inf) is NaN, ReLU's 0


@pytest.mark.parametrize("mode", [CHANNEL, LAYER])
def test_zeros_of_either_sign_at_a_zero_input_pass_as_in_the_reference(mode: str) -> None:
    """onnxruntime's PRelu gives +0 at x = +0 where prelu's slope * x is -0: no problem,
    whichever way the check goes; a non-zero there is one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    x[0, :, 0], x[1, :, 1] = 0.0, -0.0
    p = _patch(mode, None)
    leaky = np.isin(np.arange(4), p.dead).reshape(1, 4, 1) if mode == CHANNEL else np.ones((1, 4, 1), bool)
    y = np.where(x > 0, x, np.where(leaky, x * np.float32(0.01), np.float32(0)))
    y[0, :, 0] = np.float32(0.0)
    y[1, :, 1] = np.float32(-0.0)
    for wrong in (False, True):
        if wrong:
            y[1, 2, 1] = 1e-30
        check = SiteCheck(p)
        check.add(x, y, axis=1)
        want = _reference(x, y, 1, p)
        assert {k: getattr(check, k) for k in want} == want
        assert (check.problems() != []) == wrong
