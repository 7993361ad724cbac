"""Every catalogue case, saved in every PyTorch format, reports the planted answer through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.models import CASES, Case, sample_data

TORCH_FORMATS = ["module", "state_dict", "checkpoint", "safetensors", "script", "trace", "pt2"]
REPORTED_FORMAT = {"module": "pickle", "state_dict": "state_dict", "checkpoint": "state_dict",
                   "safetensors": "safetensors", "script": "torchscript", "trace": "torchscript", "pt2": "pt2"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory,
          all_formats: Callable[[str], dict[str, Path]]) -> dict[str, tuple[dict[str, Path], Path]]:
    """Each case in every format, with its --data file."""
    out = {}
    for case in CASES:
        data = tmp_path_factory.mktemp(case.name) / "data.npy"
        np.save(data, sample_data(case, n=48, seed=1))
        out[case.name] = (all_formats(case.name), data)
    return out


def scan_json(args: list[str]) -> dict:
    result = CliRunner().invoke(app, ["scan", *args, "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_format_reports_the_planted_sites(case: Case, fmt: str, saved: dict) -> None:
    paths, data = saved[case.name]
    args = [str(paths[fmt]), "--data", str(data)]
    if fmt in ("state_dict", "checkpoint", "safetensors"):
        args += ["--arch", case.factory]
    if fmt == "module":
        args += ["--trust-pickle"]
    report = scan_json(args)
    assert report["model"]["format"] == REPORTED_FORMAT[fmt]
    got = [(s["name"], s["kind"], s["neurons"], s["axis"], s["dead_indices"], s["saturated"]) for s in report["sites"]]
    want = [(s.name, s.kind, s.neurons, s.axis, list(s.dead), len(s.saturated)) for s in case.sites]
    assert got == want
    assert report["summary"]["sites"] == len(case.sites)
    assert report["sample"]["samples"] == 48


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_formats_agree_on_every_metric(case: Case, saved: dict) -> None:
    """Not only the planted answer: sparsity, dormant and means agree across formats too."""
    paths, data = saved[case.name]
    reports = [scan_json([str(paths[f]), "--data", str(data)]) for f in ("script", "trace", "pt2")]
    for other in reports[1:]:
        for a, b in zip(reports[0]["sites"], other["sites"], strict=True):
            assert a["name"] == b["name"]
            assert a["dormant"] == b["dormant"]
            assert a["sparsity"] == pytest.approx(b["sparsity"], abs=1e-9)
            assert a["mean"] == pytest.approx(b["mean"], rel=1e-5, abs=1e-7)


def test_module_sites_name_the_module_and_functional_sites_the_op(saved: dict) -> None:
    paths, data = saved["functional"]
    report = scan_json([str(paths["script"]), "--data", str(data)])
    ops = {s["name"]: s["op"] for s in report["sites"]}
    assert ops["block/relu#4"] == "aten.clamp"
    reused = scan_json([str(saved["reused_relu"][0]["pt2"]), "--data", str(saved["reused_relu"][1])])
    assert [s["op"] for s in reused["sites"]] == ["nn.ReLU"] * 3


class _Containers(torch.nn.Module):
    """ModuleDict and ModuleList levels: TorchScript unrolls them, eager names keep them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.ModuleDict({"b": torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()),
                                      "c": torch.nn.ReLU()})
        self.stages = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a["c"](self.a["b"](x))
        for stage in self.stages:
            x = stage(x)
        return x


def test_container_levels_are_named_the_same_in_every_format() -> None:
    import relu_doctor as rd

    model = _Containers().eval()
    x = torch.randn(8, 4)
    expected = ["a.b.1", "a.c", "stages.0", "stages.1"]
    for obj in (model, torch.jit.script(model), torch.jit.trace(model, x), torch.export.export(model, (x,))):
        assert [s.name for s in rd.scan(obj, x.numpy()).sites] == expected


class _FlatTokens(torch.nn.Module):
    """relu(linear(x.reshape(B * T, F))): samples and tokens flattened into the first axis."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)
        with torch.no_grad():  # planted: feature 0 never fires
            self.lin.weight[0] = 0
            self.lin.bias[0] = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        return torch.relu(self.lin(x.reshape(b * t, f))).reshape(b, t, 3)


def test_flattened_samples_are_split_back_into_samples() -> None:
    import relu_doctor as rd

    model = _FlatTokens().eval()
    x = np.random.default_rng(0).standard_normal((10, 4, 6)).astype(np.float32)
    logits = x.reshape(-1, 6) @ model.lin.weight.detach().numpy().T + model.lin.bias.detach().numpy()
    fires = (logits > 0).sum(0)  # naive reference over all 40 token rows
    sample_fires = (logits.reshape(10, 4, 3) > 0).any(1).sum(0)
    program = torch.export.export(model, (torch.from_numpy(x[:2]),), dynamic_shapes=({0: torch.export.Dim("b")},))
    for obj in (model, torch.jit.script(model), program):
        site = rd.scan(obj, x, batch_size=3).sites[0]  # 10 = 3 + 3 + 3 + 1: uneven batches
        assert (site.shape, site.axis, site.dead_indices) == ([4, 3], 2, [0])
        np.testing.assert_array_equal(site.counters.fires, fires)
        np.testing.assert_array_equal(site.counters.sample_fires, sample_fires)
