"""The capture computing a clamp-kind activation itself (backends/fused_clamp.py) must write
what torch writes, bit for bit, and report what reading torch's output would report.

The answers come from torch's own ops (the activation) and from fused_rows.row_stats on
torch's output (the row results), on the values where a clamp could go wrong: NaN of
either sign, -0.0, denormals, infinities, the bounds themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import relu_doctor as rd
from relu_doctor.backends import openmp_team
from relu_doctor.backends.fused_clamp import clamp_row_stats
from relu_doctor.backends.fused_rows import row_stats
from relu_doctor.backends.torch_reduce import FusedRoad

# (torch's op, the top it clamps at, whether it writes its input)
OPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float, bool]] = {
    "relu": (torch.relu, np.inf, False),
    "relu_": (torch.relu_, np.inf, True),
    "clamp_min": (lambda t: torch.clamp_min(t, 0), np.inf, False),
    "clamp(0, 6)": (lambda t: torch.clamp(t, 0, 6), 6.0, False),
    "clamp_(0, 2.5)": (lambda t: t.clamp_(0, 2.5), 2.5, True),
    "hardtanh(0, 6)": (lambda t: F.hardtanh(t, 0.0, 6.0), 6.0, False),
    "relu6 in place": (lambda t: F.relu6(t, inplace=True), 6.0, True),
}


def tricky(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal(shape) * 5).to(dtype)
    flat = x.view(-1)
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # the smallest denormal
    specials = [float("nan"), -float("nan"), -0.0, 0.0, tiny, -tiny, 6.0, 2.5, float("inf"), -float("inf")]
    picks = rng.choice(flat.numel(), size=min(flat.numel(), 3 * len(specials)), replace=False)
    for k, v in zip(picks, specials * 3):
        flat[int(k)] = v
    return x


def bits(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


def same_rows(got: object, want: object) -> None:
    for name in ("counts", "lows", "highs"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    # NaN rows included: a NaN must reach the sums in both
    np.testing.assert_allclose(got.sums, want.sums, rtol=1e-12, equal_nan=True)  # type: ignore[attr-defined]


@pytest.fixture(params=["torch's OpenMP team", "threads of its own"])
def split_road(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "threads of its own":
        monkeypatch.setattr(openmp_team, "team", lambda: None)
    elif openmp_team.team() is None:
        pytest.skip("no OpenMP team to run on here")
    return str(request.param)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, red", [((3, 5, 37), 2), ((3, 37, 5), 1), ((4, 6, 1), 2)])
def test_the_activation_and_its_rows_are_torchs(op: str, dtype: torch.dtype, shape: tuple[int, ...],
                                                 red: int) -> None:
    apply, top, in_place = OPS[op]
    x = tricky(shape, dtype, seed=len(op))
    want_y = apply(x.clone())
    want = row_stats(want_y.numpy(), red, signed=False)
    y = x.clone() if in_place else torch.empty_like(x)
    source = y if in_place else x
    got = clamp_row_stats(source.numpy(), y.numpy(), red, top)
    np.testing.assert_array_equal(bits(y), bits(want_y))
    same_rows(got, want)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("shape, red", [((5, 3, 300_001), 2), ((5, 300_001, 3), 1)])
def test_threads_split_the_rows_and_agree(split_road: str, in_place: bool, shape: tuple[int, ...], red: int) -> None:
    x = tricky(shape, torch.float32, seed=1)
    want_y = torch.clamp(x, 0, 6)
    want = row_stats(want_y.numpy(), red, signed=False)
    y = x.clone() if in_place else torch.empty_like(x)
    got = clamp_row_stats((y if in_place else x).numpy(), y.numpy(), red, 6.0, threads=2)
    np.testing.assert_array_equal(bits(y), bits(want_y))
    same_rows(got, want)


class _Net(torch.nn.Module):
    """Every clamp form the capture computes, on channel-first, channels_last and token
    (neurons-last) activations and a transposed view (neurons-first in memory), and a relu
    of every other channel (not one dense block), which it leaves to torch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.conv(x), inplace=True)
        h = torch.clamp(self.conv2(h.contiguous(memory_format=torch.channels_last)), 0, 2.5)
        t = h.flatten(2).transpose(1, 2)  # (samples, positions, 8), a strided view
        t = F.relu(self.fc(t))
        t = torch.relu_(t - 0.1)
        every_other = torch.relu(h[:, ::2]).mean((1, 2, 3))
        return F.hardtanh(t.transpose(1, 2), 0.0, 6.0).sum((1, 2)) + torch.relu(t.transpose(1, 2)).mean((1, 2)) + \
            every_other


@pytest.fixture
def fused_road() -> Iterator[None]:
    with FusedRoad.pinned("fused"):
        yield


def test_a_scan_computing_its_clamps_reports_what_reading_them_reports(fused_road: None,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = _Net().eval()
    data = np.random.default_rng(0).standard_normal((20, 3, 6, 6)).astype(np.float32)
    computed = rd.scan(model, data=data, batch_size=8, neuron_extremes=True)
    from relu_doctor.backends.torch_calls import ActivationCalls

    monkeypatch.setattr(ActivationCalls, "compute_clamp", lambda self, x, top, in_place: None)
    read = rd.scan(model, data=data, batch_size=8, neuron_extremes=True)
    assert [s.name for s in computed.sites] == [s.name for s in read.sites] and len(computed.sites) == 7
    for a, b in zip(computed.sites, read.sites):
        da, db = a.to_dict(), b.to_dict()
        ca, cb = da.pop("counters"), db.pop("counters")
        assert da.keys() == db.keys()
        for key in da:  # numbers to float64 rounding (a sum may group its terms differently), the rest exactly
            numbers = isinstance(da[key], float)
            assert da[key] == (pytest.approx(db[key], rel=1e-12) if numbers else db[key]), (a.name, key)
        for key in ca:
            assert np.allclose(np.asarray(ca[key], float), np.asarray(cb[key], float), rtol=1e-12, equal_nan=True), \
                (a.name, key)
        for key in ("rows", "samples", "fires", "sample_fires", "nonfinite", "neuron_max", "neuron_min"):
            assert ca.get(key) == cb.get(key), (a.name, key)  # counts and extremes exactly


def test_the_model_computes_what_it_computes_without_the_scan(fused_road: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The output of a forward pass under the capture is the plain forward's, bit for bit."""
    from relu_doctor.backends.torch import _CaptureMode
    from relu_doctor.backends.torch_naming import EagerModuleTracker

    torch.manual_seed(0)
    model = _Net().eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((8, 3, 6, 6)).astype(np.float32))
    computed: list[object] = []
    compute = _CaptureMode.compute_clamp

    def counted(*args: object, **kwargs: object) -> object:
        computed.append(compute(*args, **kwargs))  # type: ignore[arg-type]
        return computed[-1]

    monkeypatch.setattr(_CaptureMode, "compute_clamp", counted)
    with torch.inference_mode():
        plain = model(x)
        tracker = EagerModuleTracker(model)
        mode = _CaptureMode(tracker, "auto", False)
        mode.computes_clamps = True
        mode.start_batch(8, 8)
        try:
            with mode:
                captured = model(x)
        finally:
            tracker.close()
    assert sum(c is not None for c in computed) == 6 and len(computed) == 7
    np.testing.assert_array_equal(bits(captured), bits(plain))


class _OutVariant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buffer = torch.empty_like(x).fill_(-5.0)
        torch.clamp(x, 0, 6, out=buffer)
        return torch.relu(buffer - 1)


@pytest.mark.parametrize("script", [False, True])
def test_an_out_variant_writes_its_buffer(script: bool) -> None:
    """clamp(..., out=buffer) is left to torch: computed into a fresh tensor, the buffer kept
    its old values and the relu after it read them (its total was 0)."""
    data = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32) + 1
    model = torch.jit.script(_OutVariant()) if script else _OutVariant()
    totals = {}
    for road in ("fused", "exact"):
        with FusedRoad.pinned(road):
            report = rd.scan(model, data=data, batch_size=8)
        totals[road] = [s.to_dict()["counters"]["total"] for s in report.sites]
    want = np.clip(data, 0, 6)  # the reference: the buffer after the clamp, then relu(buffer - 1)
    assert totals["fused"] == pytest.approx(totals["exact"], rel=1e-12)
    assert totals["fused"] == pytest.approx([want.sum(), np.maximum(want - 1, 0).sum()], rel=1e-6)
