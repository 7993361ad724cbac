"""Streaming counters equal a naive reference: keep every activation, then reduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_doctor.backends.torch_reduce import FusedRoad, TorchSiteAccumulator
from relu_doctor.stats import SiteCounters, detection_floor, site_metrics


def naive(y: np.ndarray, axis: int, bound: float | None, tau: float) -> dict:
    """Straight from SPEC 4, on the whole (samples, ...) array at once."""
    moved = np.moveaxis(y, axis, -1)
    per_sample = moved.reshape(y.shape[0], -1, moved.shape[-1])  # (S, positions, C)
    m = per_sample.reshape(-1, moved.shape[-1]).astype(np.float64)  # (M, C), summed exactly enough
    fires = (m > 0).sum(0)
    mean_abs = np.abs(m).mean(0)
    avg = mean_abs.mean()
    dormant = np.full(m.shape[1], True) if avg == 0 else mean_abs / avg <= tau
    return {
        "fires": fires,
        "sample_fires": (per_sample > 0).any(1).sum(0),
        "dead_indices": np.flatnonzero(fires == 0).tolist(),
        "always_on": int((m > 0).all(0).sum()),
        "saturated": int((m >= bound).all(0).sum()) if bound is not None else 0,
        "dormant": int(dormant.sum()),
        "rarely_active": int(((fires > 0) & (fires < 0.01 * m.shape[0])).sum()),
        "sparsity": float((m <= 0).mean()),
        "mean": float(m.mean()),
        "max": float(m.max()),
        "min": m.min(0),
    }


def stream(y: np.ndarray, axis: int, cuts: list[int], nonnegative: bool, keep_min: bool,
           accelerator: bool = False) -> SiteCounters:
    """`accelerator`: the road a GPU's activations take (no host-side finiteness check), here
    on the host, where CI can run it."""
    neurons = y.shape[axis] if y.ndim > 1 else 1
    acc = TorchSiteAccumulator(neurons, torch.device("cpu"), nonnegative, keep_min)
    acc.on_cpu = not accelerator
    for part in np.split(y, cuts):
        if len(part):
            acc.update(torch.from_numpy(part), axis)
    return acc.counters()


@st.composite
def activations(draw: st.DrawFn) -> tuple[np.ndarray, int, list[int], str]:
    rank = draw(st.integers(2, 4))
    shape = [draw(st.integers(1, 9))] + [draw(st.integers(1, 5)) for _ in range(rank - 1)]
    axis = draw(st.integers(1, rank - 1))
    kind = draw(st.sampled_from(["relu", "relu6", "leaky"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(shape).astype(np.float32) * 3
    y[rng.random(shape) < 0.3] = 0  # exact zeros are "not firing"
    if kind == "relu":
        y = np.maximum(y, 0)
    elif kind == "relu6":
        y = np.clip(y, 0, 6)
    dead = rng.random(shape[axis]) < 0.3  # planted: whole columns never positive
    index = [slice(None)] * rank
    index[axis] = dead
    y[tuple(index)] = 0 if kind != "leaky" else -np.abs(y[tuple(index)])
    if kind == "relu6":  # planted: whole columns saturated, or positive everywhere
        index[axis] = ~dead & (rng.random(shape[axis]) < 0.3)
        y[tuple(index)] = 6
        index[axis] = ~dead & (rng.random(shape[axis]) < 0.3)
        y[tuple(index)] = rng.uniform(0.5, 6, y[tuple(index)].shape)
    cuts = sorted(draw(st.lists(st.integers(0, shape[0]), max_size=4)))
    return y, axis, cuts, kind


@pytest.mark.parametrize("road", ["exact", "fused", "accelerator"])
@settings(max_examples=150, deadline=None)
@given(case=activations())
def test_streaming_counters_equal_naive_reference(case: tuple[np.ndarray, int, list[int], str], road: str) -> None:
    y, axis, cuts, kind = case
    bound = 6.0 if kind == "relu6" else None
    with FusedRoad.pinned("fused" if road == "fused" else "exact"):
        counters = stream(y, axis, cuts, nonnegative=kind != "leaky", keep_min=bound is not None,
                          accelerator=road == "accelerator")
    ref = naive(y, axis, bound, 0.025)
    np.testing.assert_array_equal(counters.fires, ref["fires"])
    np.testing.assert_array_equal(counters.sample_fires, ref["sample_fires"])
    m = site_metrics(counters, bound)
    assert m.dead_indices == ref["dead_indices"]
    assert (m.always_on, m.saturated, m.dormant, m.rarely_active) == (
        ref["always_on"], ref["saturated"], ref["dormant"], ref["rarely_active"])
    assert m.sparsity == pytest.approx(ref["sparsity"], abs=1e-12)
    assert m.mean == pytest.approx(ref["mean"], rel=1e-6, abs=1e-9)
    assert m.max == pytest.approx(ref["max"])
    if bound is not None:  # exact, per neuron
        np.testing.assert_array_equal(counters.min, ref["min"])


@settings(max_examples=60, deadline=None)
@given(activations(), st.integers(0, 9))
def test_split_scans_merge_exactly(case: tuple[np.ndarray, int, list[int], str], at: int) -> None:
    y, axis, _, kind = case
    at = min(at, y.shape[0])
    with FusedRoad.pinned("exact"):  # one scan on each road: they agree
        whole = stream(y, axis, [], kind != "leaky", kind == "relu6")
    with FusedRoad.pinned("fused"):
        first = stream(y[:at], axis, [], kind != "leaky", kind == "relu6")
    second = stream(y[at:], axis, [], kind != "leaky", kind == "relu6")
    merged = first.merge(second)
    for key in ("fires", "sample_fires"):
        np.testing.assert_array_equal(getattr(merged, key), getattr(whole, key))
    np.testing.assert_allclose(merged.abs_sum, whole.abs_sum, rtol=1e-12)
    assert (merged.rows, merged.samples) == (whole.rows, whole.samples)
    assert SiteCounters.from_dict(merged.to_dict()).to_dict() == merged.to_dict()


@pytest.mark.parametrize("accelerator", [False, True])
def test_nonfinite_entries_are_counted_and_never_fire(accelerator: bool) -> None:
    y = np.zeros((4, 3), np.float32)
    y[0, 0] = np.nan
    y[1, 1] = np.inf
    y[2, 1] = 1.0
    c = stream(y, 1, [], nonnegative=True, keep_min=False, accelerator=accelerator)
    m = site_metrics(c, None)
    assert m.nonfinite == 2
    assert m.dead_indices == [0, 2]  # NaN is not > 0; inf is
    assert c.fires.tolist() == [0, 2, 0]


def test_dormant_follows_redo_scores() -> None:
    # neuron means |y|: 1, 1, 0.02 -> layer mean 0.6733; scores 1.485, 1.485, 0.0297
    y = np.array([[1.0, 1.0, 0.02]] * 5, np.float32)
    c = stream(y, 1, [], nonnegative=True, keep_min=False)
    assert site_metrics(c, None, tau=0.025).dormant == 0
    assert site_metrics(c, None, tau=0.03).dormant == 1
    zero = stream(np.zeros((3, 4), np.float32), 1, [], True, False)
    assert site_metrics(zero, None).dormant == 4  # every mean 0: all dormant


def test_detection_floor_is_rule_of_three() -> None:
    assert detection_floor(300) == pytest.approx(1 - 0.05 ** (1 / 300))
    assert 0.0099 < detection_floor(300) < 0.0101
    assert detection_floor(8) > 0.3


@pytest.mark.parametrize("team", [True, False])
def test_reduction_thread_choice_restores_torch_threads_and_counts_the_same(team: bool,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """On torch's OpenMP team the reduction uses torch's threads like any op; without it,
    the workspace tries torch's count and one thread and keeps the faster."""
    from relu_doctor.backends import openmp_team
    from relu_doctor.backends.torch_reduce import Workspace

    if not team:
        monkeypatch.setattr(openmp_team, "team", lambda: None)
    elif openmp_team.team() is None:
        pytest.skip("no OpenMP team found (not Linux)")
    y = np.maximum(np.random.default_rng(3).standard_normal((6, 4, 50)), 0).astype(np.float32)
    before = torch.get_num_threads()
    workspace = Workspace()
    acc = TorchSiteAccumulator(4, torch.device("cpu"), True, True, workspace=workspace)
    chosen = set()
    for part in np.split(y, 6):  # one batch each: the workspace tries each thread count
        workspace.start_batch()
        chosen.add(workspace.threads)
        acc.update(torch.from_numpy(part), 1)
        assert torch.get_num_threads() == before
    assert chosen == ({before} if team or before == 1 else {before, 1})
    whole = stream(y, 1, [], True, True)
    np.testing.assert_array_equal(acc.counters().fires, whole.fires)
    np.testing.assert_array_equal(acc.counters().min, whole.min)
