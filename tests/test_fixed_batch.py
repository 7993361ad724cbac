"""Models exported with a fixed batch (often 1): relaxed when the graph allows it, else a
warning says why batches are small. The answer is the scan of a dynamic-batch export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app


class Flat(nn.Module):
    """conv-relu, flatten by x.size(0), linear-relu: per-sample math, batchable."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return torch.relu(self.fc(h.view(h.size(0), -1)))


class AcrossBatch(nn.Module):
    """A softmax over the batch axis: only batch 1 means what it meant at export."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)).softmax(dim=0)


def _onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic: bool, dynamo: bool = False) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, input_names=["x"], verbose=False)
        else:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"],
                              output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None)
    return path


def _fires(report: rd.Report) -> list[list[int]]:
    return [s.counters.fires.tolist() for s in report.sites]


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["torchscript-exporter", "dynamo-exporter"])
def test_a_batch_of_one_onnx_is_relaxed_and_scans_in_batches(tmp_path: Path, dynamo: bool) -> None:
    data = np.random.default_rng(0).standard_normal((40, 3, 5, 5)).astype(np.float32)
    fixed = _onnx(Flat(), torch.zeros(1, 3, 5, 5), tmp_path / "fixed.onnx", dynamic=False, dynamo=dynamo)
    dynamic = _onnx(Flat(), torch.zeros(2, 3, 5, 5), tmp_path / "dynamic.onnx", dynamic=True)
    report = rd.scan(fixed, data, batch_size=16)
    assert report.sample["batch_size"] == 16
    assert not any("fixed" in w for w in report.warnings)
    assert _fires(report) == _fires(rd.scan(dynamic, data, batch_size=16))


def test_a_graph_that_pins_the_batch_keeps_it_and_says_why_once(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    path = _onnx(AcrossBatch(), torch.zeros(1, 8), tmp_path / "one.onnx", dynamic=False)
    result = CliRunner().invoke(app, ["scan", str(path), "--data", str(_npy(tmp_path, data)), "--batch-size", "16",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"batch_size": 1' in result.stdout
    assert result.stderr.count("fixed at 1") == 1
    assert "mixes the samples" in result.stderr and "not 16" in result.stderr
    with torch.no_grad():  # one sample at a time, the model's own answer
        y = torch.relu(AcrossBatch().fc(torch.from_numpy(data)))
    report = rd.scan(path, data, batch_size=16)
    assert report.sites[0].counters.fires.tolist() == (y > 0).sum(0).tolist()


def test_a_fixed_batch_pt2_says_how_to_re_export(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((5, 3, 5, 5)).astype(np.float32)
    program = torch.export.export(Flat().eval(), (torch.zeros(1, 3, 5, 5),))
    report = rd.scan(program, data, batch_size=16)
    assert report.sample["batch_size"] == 1
    notes = [w for w in report.warnings if "fixed batch of 1" in w]
    assert len(notes) == 1 and "dynamic_shapes" in notes[0] and "not 16" in notes[0]
    assert _fires(report) == _fires(rd.scan(Flat().eval(), data))


def _npy(folder: Path, data: np.ndarray) -> Path:
    np.save(folder / "data.npy", data)
    return folder / "data.npy"
