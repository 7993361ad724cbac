"""`relu-doctor prune`: dead channels removed structurally (SPEC 14).

Known answers: the models of tests/prune_models.py have 30% of their hidden channels
planted dead (BatchNorm weight 0 / Linear row 0, bias -1), so exactly those must go,
and the pruned model must compute the original's outputs on any input (checked here
on fresh inputs, independently of prune's own verification). Channels tied to a
residual add are left alone, with that reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.loading import load_model
from relu_doctor.patching import ScanOptions
from relu_doctor.patching.prune_run import prune_file
from tests.models import run_saved, save_model
from tests.prune_models import build_resnet_style, build_wide_mlp, planted_mid_dead

MLP_SHAPE, CNN_SHAPE = (16,), (3, 8, 8)


def _small_mlp() -> torch.nn.Module:
    return build_wide_mlp((16, 40, 30, 4))


def _small_resnet() -> torch.nn.Module:
    return build_resnet_style(width=8, mid=20, blocks=2)


def _save(model: torch.nn.Module, shape: tuple[int, ...], fmt: str, folder: Path) -> Path:
    return save_model(model, shape, fmt, folder / f"m.{fmt}")


def _same_function(a: Path, b: Path, shape: tuple[int, ...]) -> None:
    x = (np.random.default_rng(7).standard_normal((64, *shape)) * 3).astype(np.float32)
    ya, yb = run_saved(a, x), run_saved(b, x)
    assert np.abs(ya - yb).max() <= 1e-6 * np.abs(ya).max()


@pytest.mark.parametrize("fmt", ["pt", pytest.param("pt2", marks=pytest.mark.slow), "onnx"])
def test_prune_mlp_removes_the_planted_neurons(fmt: str, tmp_path: Path) -> None:
    model = _small_mlp()
    planted = [[i for i in range(m.out_features) if not m.weight[i].any()] for m in model.net[:-1:2]]
    src = _save(model, MLP_SHAPE, fmt, tmp_path)
    out = tmp_path / f"out.{fmt}"
    outcome = prune_file(src, out, options=ScanOptions(input_shape=MLP_SHAPE, samples=16, trust_pickle=True))
    assert outcome.written and not outcome.plan.left_alone
    assert [g.neurons for g in outcome.plan.groups] == planted
    assert [len(p) for p in planted] == [12, 9]  # 30% of 40 and of 30
    _same_function(src, out, MLP_SHAPE)
    assert out.stat().st_size < src.stat().st_size
    # 16*40 + 40 + 40*30 + 30 + 30*4 + 4 weights before; the planted rows, biases and columns are gone
    assert outcome.weights_before == 2034
    assert outcome.weights_after == 16 * 28 + 28 + 28 * 21 + 21 + 21 * 4 + 4
    assert outcome.macs_after < outcome.macs_before


@pytest.mark.parametrize("fmt", [pytest.param("pt", marks=pytest.mark.slow), "onnx"])
def test_prune_resnet_style_handles_residual_groups(fmt: str, tmp_path: Path) -> None:
    model = _small_resnet()
    planted = planted_mid_dead(model)  # type: ignore[arg-type]
    src = _save(model, CNN_SHAPE, fmt, tmp_path)
    out = tmp_path / f"out.{fmt}"
    outcome = prune_file(src, out, options=ScanOptions(input_shape=CNN_SHAPE, samples=8, trust_pickle=True))
    assert [g.neurons for g in outcome.plan.groups] == planted
    # the stem's dead channels feed the first residual add: a dependency group, left alone
    (stem,) = outcome.plan.left_alone
    assert stem.neurons == 2 and "residual add" in stem.reason
    _same_function(src, out, CNN_SHAPE)
    assert out.stat().st_size < src.stat().st_size
    if fmt == "onnx":
        shapes = {t.name: list(t.dims) for t in onnx.load(str(out)).graph.initializer}
        assert sorted(d[0] for d in shapes.values() if len(d) == 4 and d[1] == 8) [:2] == [14, 14]


class _Shy(torch.nn.Module):
    """A neuron dead on standard-normal inputs (bias -8) but not provably dead."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = torch.nn.Linear(4, 6), torch.nn.Linear(6, 2)
        with torch.no_grad():
            self.fc1.bias.fill_(0.5)
            self.fc1.weight[3].fill_(0.5)
            self.fc1.bias[3] = -8.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_sample_dead_needs_the_flag_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "shy.pt"
    torch.save(_Shy().eval(), src)
    runner = CliRunner()
    base = ["prune", str(src), "--trust-pickle", "--input-shape", "4", "--samples", "64", "-o", str(tmp_path / "o.pt")]
    plain = runner.invoke(app, base)
    assert plain.exit_code == 0, plain.output
    assert "Nothing to prune" in plain.stdout and not (tmp_path / "o.pt").exists()
    flagged = runner.invoke(app, [*base, "--sample-dead"])
    assert flagged.exit_code == 0, flagged.output
    assert "1 dead on the sample neuron(s) removed" in flagged.stdout
    assert "on the sample; elsewhere the removed neurons might have fired" in flagged.stdout
    assert load_model(tmp_path / "o.pt", trust_pickle=True).obj.fc1.out_features == 5


def test_failed_verification_exits_3_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import relu_doctor.patching.prune_run as prune_run

    src = _save(_small_mlp(), MLP_SHAPE, "onnx", tmp_path)
    out = tmp_path / "o.onnx"
    monkeypatch.setattr(prune_run, "_agrees", lambda check: False)
    result = CliRunner().invoke(app, ["prune", str(src), "--input-shape", "16", "--samples", "8", "-o", str(out)])
    assert result.exit_code == 3
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_cli_prune_summary(tmp_path: Path) -> None:
    src = _save(_small_resnet(), CNN_SHAPE, "onnx", tmp_path)
    out = tmp_path / "o.onnx"
    result = CliRunner().invoke(app, ["prune", str(src), "--input-shape", "3,8,8", "--samples", "8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Left alone: /Relu (2 provably dead neurons): a residual add reads them" in result.stdout
    assert "12 provably dead neuron(s) removed" in result.stdout
    assert "weights: " in result.stdout and "FLOPs per input: " in result.stdout
