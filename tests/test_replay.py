"""The graph formats' fast road (backends/torch_replay.py): a TorchScript or .pt2 scan runs
its first batch under the capture mode and the later ones without it.

Each scan here runs three batches, on the exact road (FusedRoad), so that no activation is
computed by the mode itself, which keeps the mode (test_computed_clamps_keep_the_mode). The
answer to match is known apart from the fast road:
the same scan with every batch under the mode (the road every scan took before), and, where
a graph must keep the mode (a branch or a bound that changes between batches), the eager
module's scan, which never replays. Each test also says whether the fast road ran, so a
change that quietly stops using it (or uses it where it must not) fails."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import relu_doctor as rd
from relu_doctor.backends import torch_replay
from relu_doctor.backends.torch_reduce import FusedRoad
from tests.models import CAPTURE_CASES, CASES, Case, sample_data
from tests.test_capture_cases import _saved

# where the first batch measures a site away from an observed tensor: the mode stays
KEEP_THE_MODE = {("relu_rnn", "trace"), ("relu_rnn", "script"), ("relu_rnn", "pt2"),
                 ("encoder_layer", "trace"), ("encoder_layer", "script")}
QUICK_PT2 = {"reused_relu", "functional", "leaky", "hand_hardswish"}  # torch.export is slow


@pytest.fixture(autouse=True)
def _exact_road() -> Iterator[None]:
    with FusedRoad.pinned("exact"):
        yield


def _scan(subject: Any, data: Any, monkeypatch: pytest.MonkeyPatch, fast: bool, **options: Any) -> tuple[Any, int]:
    """(the report, how many batches ran without the mode) for three batches of 8."""
    replayed = [0]
    call = torch_replay.Replay.__call__

    def counted(self: torch_replay.Replay, *inputs: Any) -> Any:
        replayed[0] += 1
        return call(self, *inputs)

    with monkeypatch.context() as patch:
        patch.setattr(torch_replay.Replay, "__call__", counted)
        if not fast:  # no first batch qualifies: every batch under the mode
            patch.setattr(torch_replay.Recording, "finish", lambda self: False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = rd.scan(subject, data=data, batch_size=8, **options)
    return report, replayed[0]


def _sites(report: Any) -> list[dict]:
    return [s.to_dict() for s in report.sites]


def _cases() -> Iterator[Any]:
    for c in [*CASES, *CAPTURE_CASES]:
        for fmt in ("trace", "script", "pt2"):
            marks = [pytest.mark.slow] if fmt == "pt2" and c.name not in QUICK_PT2 else []
            yield pytest.param(c, fmt, id=f"{c.name}-{fmt}", marks=marks)


@pytest.mark.parametrize(("c", "fmt"), list(_cases()))
def test_the_fast_road_reports_what_the_mode_reports(c: Case, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    subject = _saved(c, fmt, c.build(), torch.from_numpy(sample_data(c, n=4, seed=9)))
    data = sample_data(c, n=24, seed=3)
    fast, replayed = _scan(subject, data, monkeypatch, fast=True)
    mode, none = _scan(subject, data, monkeypatch, fast=False)
    assert none == 0
    assert replayed == (0 if (c.name, fmt) in KEEP_THE_MODE else 2)
    assert _sites(fast) == _sites(mode) and fast.warnings == mode.warnings
    assert [s.dead_indices for s in fast.sites] == [sorted(s.dead) for s in c.sites]


@pytest.mark.parametrize("options", [{"include_smooth": True}, {"neuron_extremes": True},
                                     {"neuron_axis": "last"}], ids=["smooth", "extremes", "axis-last"])
@pytest.mark.parametrize("fmt", ["trace", "pt2"])
def test_every_scan_option_takes_the_same_answer(options: dict, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written hard-swish, reported as a site with include_smooth, is settled after
    its relu6's observe point: that scan keeps the mode; the others replay."""
    c = next(c for c in CASES if c.name == "hand_hardswish")
    subject = _saved(c, fmt, c.build(), torch.from_numpy(sample_data(c, n=4, seed=9)))
    data = sample_data(c, n=24, seed=3)
    fast, replayed = _scan(subject, data, monkeypatch, fast=True, **options)
    mode, _ = _scan(subject, data, monkeypatch, fast=False, **options)
    assert replayed == (0 if "include_smooth" in options else 2)
    assert _sites(fast) == _sites(mode)
    assert ("hardswish" in [s.kind for s in fast.sites]) is ("include_smooth" in options)


class _Switch(torch.nn.Module):
    """Whether an activation runs depends on the batch (not on the first one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x[:, 0].mean() > 0):
            return F.relu(x - 1)
        return x * 2


class _DataBound(torch.nn.Module):
    """clamp(x, min=b) with b computed from the batch: a relu where b is 0, else no activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=float(bool(x[:, 0].mean() > 0)))


def _alternating(rows: int = 24) -> np.ndarray:
    """Batches of 8 whose first column is negative, positive, negative."""
    x = np.random.default_rng(0).standard_normal((rows, 6)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) * np.repeat([-1, 1, -1], 8)
    return x


@pytest.mark.parametrize(("model", "relu_samples"), [(_Switch, 8), (_DataBound, 16)])
def test_what_changes_between_batches_keeps_the_mode(model: type, relu_samples: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    eager = model().eval()
    data = _alternating()
    want, _ = _scan(eager, data, monkeypatch, fast=True)
    got, replayed = _scan(torch.jit.script(eager), data, monkeypatch, fast=True)
    assert replayed == 0
    assert _sites(got) == _sites(want)
    # the answer depends on the batch: the relu ran on batch 2 (_Switch), the clamp is one on 1 and 3
    relu = next(s for s in want.sites if s.kind == "relu")
    assert relu.to_dict()["counters"]["samples"] == relu_samples


class _OptionalShift(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(x)
        if shift is not None:
            h = h + shift
        return F.relu(h)


def test_a_scripted_forward_with_defaults_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    eager = _OptionalShift().eval()
    data = _alternating()
    want, _ = _scan(eager, data, monkeypatch, fast=True)
    got, replayed = _scan(torch.jit.script(eager), data, monkeypatch, fast=True)
    assert replayed == 2 and _sites(got) == _sites(want)


def test_a_trace_scanned_before_it_ever_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchScript optimizes a graph on its first run, and pools its tensor constants with
    aten::equal; under the mode those arrive as numbers. A trace made without its check
    run ({3} and {6} in a hand-written hard-swish) failed with a traceback."""
    c = next(c for c in CASES if c.name == "hand_hardswish")
    model = c.build()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.from_numpy(sample_data(c, n=4, seed=9)), check_trace=False)
    data = sample_data(c, n=24, seed=3)
    got, _ = _scan(traced, data, monkeypatch, fast=True)
    want, _ = _scan(model, data, monkeypatch, fast=True)
    assert _sites(got) == _sites(want)


@pytest.mark.parametrize("fmt", ["trace", "script", "pt2"])
def test_the_replay_computes_clamps_as_the_mode_does(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the fused road the capture computes relu / relu6 / clip itself and measures them
    in the same pass: under the mode in the first batch, through the graph's clamp ops in
    the replayed ones. Leaky kinds are read after torch computed them, in both."""
    from relu_doctor.backends.torch import _CaptureMode

    computed = [0]
    compute = _CaptureMode.compute_clamp

    def counted(self: _CaptureMode, *args: Any, **kwargs: Any) -> Any:
        done = compute(self, *args, **kwargs)
        computed[0] += done is not None
        return done

    monkeypatch.setattr(_CaptureMode, "compute_clamp", counted)
    for name, per_batch in (("relu6", 3), ("inplace", 3), ("leaky", 0)):
        c = next(c for c in CASES if c.name == name)
        subject = _saved(c, fmt, c.build(), torch.from_numpy(sample_data(c, n=4, seed=9)))
        data = sample_data(c, n=24, seed=3)
        computed[0] = 0
        with FusedRoad.pinned("fused"):
            fast, replayed = _scan(subject, data, monkeypatch, fast=True)
            mode, _ = _scan(subject, data, monkeypatch, fast=False)
        assert replayed == 2 and computed[0] == 2 * 3 * per_batch, name  # two scans of three batches
        assert _sites(fast) == _sites(mode)


@pytest.mark.slow
def test_a_replayed_scan_does_not_load_dynamo() -> None:
    """The CLI's cost over `import torch` (issue 19: under a second): the ops' first call
    loaded dynamo (1.1 s) when they were torch.library.custom_op's."""
    import subprocess
    import sys

    code = """if True:
        import sys, torch, relu_doctor as rd
        from relu_doctor.backends import torch_replay
        model = torch.jit.load("sample_models/sample_cnn.pt")
        calls = []
        replay = torch_replay.Replay.__call__
        torch_replay.Replay.__call__ = lambda self, *a: calls.append(1) or replay(self, *a)
        rd.scan(model, data="sample_models/sample_batch.npy", batch_size=128)
        print(len(calls), "torch._dynamo" in sys.modules)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "False"]  # 512 samples: the last three batches replayed


class _IntegerClamp(torch.nn.Module):
    """clamp(x.long(), 0, 6): a relu6 of integers, then an embedding that needs them whole."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.embedding(torch.clamp(x.long(), 0, 6)).sum(1))


@pytest.mark.parametrize("fmt", ["script", "pt2"])
def test_an_integer_clamp_stays_integer(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay ran a replaced clamp as a float clamp: batch 2 gave the embedding float
    indices and failed. It now runs the op the clamp op stands for."""
    torch.manual_seed(0)
    eager = _IntegerClamp().eval()
    data = np.random.default_rng(0).integers(-3, 10, (24, 5)).astype(np.float32)
    subject: Any = torch.jit.script(eager)
    if fmt == "pt2":
        subject = torch.export.export(eager, (torch.from_numpy(data[:8]),),
                                      dynamic_shapes=({0: torch.export.Dim("b", min=2)},))
    want, _ = _scan(eager, data, monkeypatch, fast=True)
    got, replayed = _scan(subject, data, monkeypatch, fast=True)
    assert replayed == 2 and _sites(got) == _sites(want)
