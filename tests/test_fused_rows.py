"""The one-pass reduction of activations (backends/fused_rows.py) against a naive
reference, entry by entry, on the values where a fast road could go wrong: exact zeros and
-0.0, the smallest denormals of either sign, the clip bound, negative values (leaky kinds),
both memory layouts, strided views, threads, and NaN / inf (which must reach the sum)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from relu_doctor.backends import openmp_team
from relu_doctor.backends.fused_rows import row_stats
from relu_doctor.backends.torch_reduce import FusedRoad, TorchSiteAccumulator


@pytest.fixture(autouse=True)
def fused_road() -> Iterator[None]:
    """The accumulator tests here are about the fused road, whatever the sizes."""
    with FusedRoad.pinned("fused"):
        yield


def naive(y3: np.ndarray, red: int) -> dict[str, np.ndarray]:
    """Per (sample, neuron) row, with Python loops over plain floats."""
    rows = y3 if red == 2 else np.swapaxes(y3, 1, 2)  # (samples, neurons, positions)
    n, c = rows.shape[:2]
    out = {k: np.zeros((n, c)) for k in ("sums", "abs_sums", "counts", "lows", "highs")}
    for i in range(n):
        for j in range(c):
            values = [float(v) for v in rows[i, j]]
            out["sums"][i, j] = sum(values)
            out["abs_sums"][i, j] = sum(abs(v) for v in values)
            out["counts"][i, j] = sum(v > 0 for v in values)
            out["lows"][i, j] = min(values)
            out["highs"][i, j] = max(values)
    return out


def tricky(shape: tuple[int, ...], dtype: type, seed: int, signed: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(shape) * 4
    y = (np.where(y > 0, y, 0.01 * y) if signed else np.clip(y, 0, 6)).astype(dtype)
    flat = y.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 16), replace=False)
    tiny = np.finfo(dtype).smallest_subnormal
    specials = [0.0, -0.0, tiny, 6.0, np.finfo(dtype).tiny, 1e-30] + ([-tiny, -1e-30] if signed else [])
    for k, v in zip(picks, specials * 2):
        flat[k] = v
    return y


def check(y3: np.ndarray, red: int, threads: int = 1) -> None:
    want = naive(y3, red)
    for signed in (True,) if (y3 < 0).any() else (True, False):  # both loops where both apply
        got = row_stats(y3, red, signed=signed, threads=threads)
        np.testing.assert_array_equal(got.counts, want["counts"])
        np.testing.assert_allclose(got.sums, want["sums"], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(got.abs_sums, want["abs_sums"], rtol=1e-12, atol=1e-300)
        np.testing.assert_array_equal(got.lows.view(y3.dtype), want["lows"])  # -0.0 == 0.0
        np.testing.assert_array_equal(got.highs.view(y3.dtype), want["highs"])


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("red", [1, 2])
def test_rows_match_the_naive_reduction(dtype: type, red: int, signed: bool) -> None:
    check(tricky((3, 5, 7), dtype, seed=red, signed=signed), red)


def test_rows_of_only_negative_values_and_of_only_negative_zero() -> None:
    y = -np.abs(tricky((2, 3, 5), np.float32, 8, signed=True)) - 1
    y[1, 2] = -0.0
    check(y, 2)
    check(np.ascontiguousarray(np.swapaxes(y, 1, 2)), 1)


def test_one_position_per_row_and_strided_views() -> None:
    check(tricky((4, 6, 1), np.float32, 1), 2)  # an MLP's (N, C) activation as rows of 1
    wide = tricky((4, 9, 8), np.float32, 2)
    check(wide[:, ::2, 1:], 1)  # not contiguous: numba's any-layout kernel
    check(np.moveaxis(tricky((3, 4, 5), np.float32, 3), 1, 2), 2)


@pytest.fixture(params=["torch's OpenMP team", "threads of its own"])
def split_road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a large activation is split over threads: on torch's OpenMP team (Linux),
    and over threads of the pass's own (where no team is found)."""
    if request.param == "threads of its own":
        monkeypatch.setattr(openmp_team, "team", lambda: None)
    elif openmp_team.team() is None:
        if sys.platform == "linux":  # torch's libgomp is mapped: finding it must not fail quietly
            pytest.fail("torch's OpenMP runtime was not found in /proc/self/maps")
        pytest.skip("torch's OpenMP team is found on Linux only")
    return str(request.param)


def test_threads_split_the_rows_and_agree(split_road: str) -> None:
    y = tricky((8, 4, 70_000), np.float32, 4)  # 2.2 M entries: large enough to split
    check(y[:, :, :300], 2, threads=4)
    one, four = row_stats(y, 2, threads=1), row_stats(y, 2, threads=4)
    for field in ("sums", "counts", "lows", "highs"):
        np.testing.assert_array_equal(getattr(one, field), getattr(four, field))
    last = np.ascontiguousarray(np.swapaxes(y, 1, 2))
    np.testing.assert_array_equal(row_stats(last, 1, threads=4).counts, one.counts)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, red", [((3, 5, 300_001), 2), ((3, 300_001, 5), 1), ((7, 1, 1_000_000), 2)])
def test_uneven_splits_match_one_thread(split_road: str, dtype: type, shape: tuple[int, ...], red: int) -> None:
    """Rows that do not divide by the threads, fewer samples than threads (split by sample
    when neurons are last), signed and unsigned, against the one-thread pass, every field."""
    y = tricky(shape, dtype, seed=5, signed=True)
    for signed, values in ((True, y), (False, np.maximum(y, 0))):
        one = row_stats(values, red, signed=signed, threads=1)
        for threads in (2, 3, 4):
            split = row_stats(values, red, signed=signed, threads=threads)
            for field in ("sums", "abs_sums", "counts", "lows", "highs"):
                np.testing.assert_array_equal(getattr(split, field), getattr(one, field), err_msg=field)


def test_a_strided_view_is_split_correctly(split_road: str) -> None:
    """The team's C function reads dense memory; a strided activation takes the other road."""
    wide = tricky((4, 6, 400_000), np.float32, 6)
    view = wide[:, ::2, ::2]
    want = row_stats(np.ascontiguousarray(view), 2, threads=1)
    np.testing.assert_array_equal(row_stats(view, 2, threads=2).counts, want.counts)
    np.testing.assert_array_equal(row_stats(view, 2, threads=2).highs, want.highs)


def test_the_team_is_torchs_own_runtime() -> None:
    """A second OpenMP runtime would bring a second team of threads, competing with torch's."""
    if sys.platform != "linux":
        pytest.skip("found through /proc/self/maps")
    found = openmp_team._loaded_runtime()
    assert found is not None and Path(torch.__file__).resolve().parent in found.parents


def test_the_runtime_is_chosen_only_when_it_is_unambiguous() -> None:
    torch_folder = Path("/venv/lib/torch")
    own, system = torch_folder / "lib" / "libgomp.so.1", Path("/usr/lib/libgomp.so.1.0.0")
    intel = Path("/opt/conda/lib/libiomp5.so")
    other = {Path("/usr/lib/libc.so.6"), Path("/venv/lib/torch/lib/libtorch_cpu.so")}
    choose = openmp_team.choose_runtime
    assert choose({own, system, *other}, torch_folder) == own  # torch's, beside another
    assert choose({system, *other}, torch_folder) == system  # a torch linked to the system's
    assert choose({intel, *other}, None) == intel
    assert choose({system, intel, *other}, torch_folder) is None  # two, neither torch's: a second team
    assert choose(other, torch_folder) is None


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_reach_the_sum_of_magnitudes(bad: float, signed: bool) -> None:
    y = tricky((2, 3, 4), np.float32, 5, signed=True)
    y[1, 2, 3] = bad
    magnitudes = row_stats(y, 2, signed=signed).abs_sums
    assert not np.isfinite(magnitudes[1, 2]) and np.isfinite(magnitudes[0]).all()


def test_accumulator_counts_nonfinite_batches_on_the_exact_road() -> None:
    y = tricky((4, 3, 10), np.float32, 6)
    y[0, 0, 0], y[2, 1, 5] = np.nan, np.inf
    acc = TorchSiteAccumulator(3, torch.device("cpu"), nonnegative=True, keep_min=True, extremes=True)
    for part in (y[:1], y[1:2], y[2:]):  # exact, fused, exact: the roads' results combine
        acc.update(torch.from_numpy(part), 1)
    c = acc.counters()
    finite = np.where(np.isfinite(y), y, 0)
    np.testing.assert_array_equal(c.min, np.nanmin(y, (0, 2)))
    np.testing.assert_array_equal(c.neuron_max, np.nanmax(y, (0, 2)))
    assert c.nonfinite == 2
    np.testing.assert_array_equal(c.fires, (y > 0).sum((0, 2)))  # inf fires, NaN does not
    np.testing.assert_allclose(c.abs_sum, finite.astype(np.float64).sum((0, 2)), rtol=1e-12)
    assert c.max == np.inf


@pytest.mark.parametrize("signed", [False, True])
def test_accumulator_on_a_channels_last_activation_matches_numpy(signed: bool) -> None:
    y = torch.from_numpy(tricky((5, 6, 7, 3), np.float32, 7, signed)).to(memory_format=torch.channels_last)
    acc = TorchSiteAccumulator(6, torch.device("cpu"), nonnegative=not signed, keep_min=True, extremes=True)
    acc.update(y[:2], 1)
    acc.update(y[2:], 1)
    c, a = acc.counters(), y.numpy().astype(np.float64)
    np.testing.assert_array_equal(c.fires, (a > 0).sum((0, 2, 3)))
    np.testing.assert_array_equal(c.sample_fires, (a > 0).any((2, 3)).sum(0))
    np.testing.assert_allclose(c.abs_sum, np.abs(a).sum((0, 2, 3)), rtol=1e-12)
    assert c.total == pytest.approx(a.sum(), rel=1e-12)
    np.testing.assert_array_equal(c.min, a.min((0, 2, 3)))
    np.testing.assert_array_equal(c.neuron_max, a.max((0, 2, 3)))
    assert c.max == a.max() and c.nonfinite == 0 and c.rows == 5 * 7 * 3 and c.samples == 5


def test_kernels_compile_without_a_place_for_numbas_cache() -> None:
    """A read-only install in a container with no home: numba finds no cache folder and
    would raise at import; the kernels are compiled in memory instead."""
    code = ("import numpy as np, torch; from relu_doctor.backends.fused_rows import row_stats; "
            "print(row_stats(np.ones((2, 3, 4), np.float32), 2).counts.sum()); "
            "print(row_stats(np.ones((4, 3, 300_000), np.float32), 2, threads=2).counts.sum())")  # the team's too
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_LOCATOR_CLASSES"] = "UserProvidedCacheLocator"  # usable only with NUMBA_CACHE_DIR
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["24", str(4 * 3 * 300_000)]
