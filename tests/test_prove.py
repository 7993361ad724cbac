"""`scan --prove`: neurons dead on every input, found without data (SPEC 14).

The answers are known independently of the prover: the catalogue's planted neurons
(BatchNorm weight 0 and bias -1, Linear rows of zeros and bias -1) are dead on every
input, and nothing else is dead on a sample of standard-normal inputs. Soundness is
checked against the models themselves: random models, random input ranges, and random
inputs in the range never make a proven neuron fire, and every activation value lies
inside the interval bounds the prover computed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from relu_doctor.analysis.proof import BN_CONSTANT, INTERVAL, ZERO_WEIGHTS
from relu_doctor.loading import load_model
from tests.models import CASES, case, sample_data, save_all_formats

QUICK = ("mlp",)
FORMATS = ("module", "state_dict", "script", "trace", "pt2", "onnx")


def _saved(tmp: Path, name: str) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_all_formats(case(name), tmp)


def _check_catalogue(name: str, fmt: str, path: Path) -> None:
    c = case(name)
    arch = c.factory if fmt == "state_dict" else None
    report = rd.scan(str(path), input_shape=c.input_shape, samples=4, prove=True, arch=arch, trust_pickle=True)
    assert len(report.sites) == len(c.sites)
    for site, expected in zip(report.sites, c.sites):
        assert site.proof is not None
        assert site.proof.indices == list(expected.dead), (fmt, site.name)
        assert site.proof.saturated == list(expected.saturated), (fmt, site.name)
        bn = fmt != "onnx" and name not in ("mlp", "mlp_tokens")  # the ONNX exporter folds BN into the conv
        assert set(site.proof.rules) <= {BN_CONSTANT if bn else ZERO_WEIGHTS}, (fmt, site.name, site.proof.rules)
        d = site.to_dict()
        assert d["provably_dead"] == len(expected.dead)
        assert d["provably_dead_indices"] == list(expected.dead)
        assert len(d["proof"]) == len(expected.dead)


@pytest.mark.parametrize("name", QUICK)
def test_planted_neurons_are_proven_in_every_format(name: str, tmp_path: Path) -> None:
    paths = _saved(tmp_path, name)
    for fmt in FORMATS:
        _check_catalogue(name, fmt, paths[fmt])


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in CASES if c.name not in QUICK])
def test_whole_catalogue_is_proven_in_every_format(name: str, tmp_path: Path) -> None:
    paths = _saved(tmp_path, name)
    for fmt in FORMATS:
        _check_catalogue(name, fmt, paths[fmt])


def test_api_objects_and_report_round_trip() -> None:
    c = case("functional")
    model = c.build()
    report = rd.scan(model, input_shape=c.input_shape, samples=4, prove=True, input_range=(-1, 1))
    assert [s.proof.indices for s in report.sites] == [list(e.dead) for e in c.sites]
    assert report.settings["prove"] == {"input_range": [-1.0, 1.0], "analysed": "torch"}
    again = rd.Report.from_dict(report.to_dict())
    assert [s.to_dict(False)["provably_dead_indices"] for s in again.sites] == [list(e.dead) for e in c.sites]
    plain = rd.scan(model, input_shape=c.input_shape, samples=4)
    assert "provably_dead" not in plain.sites[0].to_dict()  # keys only with --prove


def test_gate_fails_on_provably_dead_neurons() -> None:
    c = case("reused_relu")  # 2, 3 and 2 of 8 neurons planted dead
    report = rd.scan(c.build(), input_shape=c.input_shape, samples=4, fail_provably_dead=0.3)
    assert not report.gates.passed
    assert [v.site for v in report.gates.violations] == ["relu#2"]
    assert "provably dead ratio 37.5%" in report.gates.violations[0].describe()
    assert rd.scan(c.build(), input_shape=c.input_shape, samples=4, fail_provably_dead=0.4).gates.passed


# -- interval proofs -------------------------------------------------------------------------------


class _Block(torch.nn.Module):
    """conv -> bn -> relu, a residual add, a concat, pooling and a head: the ops IBP must follow."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1, groups=2)
        self.side = torch.nn.Conv2d(3, 4, 1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(10 * 2 * 2, 8)
        self.relu6 = torch.nn.ReLU6()
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.side, self.fc):
                m.bias.add_(shift)
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn1.bias.uniform_(-1.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.nn.functional.leaky_relu(self.conv2(h) + h, 0.1)
        h = torch.cat([h, self.relu6(self.side(x) * 0.5 - 0.25)], dim=1)
        h = torch.nn.functional.adaptive_avg_pool2d(self.pool(h), 2)
        return torch.relu(self.fc(h.flatten(1)))


def _random_block(seed: int, shift: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _Block(shift).eval()


def _activations(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of every ReLU-family call, in order: a plain mode, not relu-doctor's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    outs: list[torch.Tensor] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket.__name__ in ("relu", "leaky_relu", "hardtanh", "relu6"):
                outs.append(out.clone())
            return out

    with torch.no_grad(), Record():
        model(x)
    return outs


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_interval_bounds_hold_on_random_inputs(seed: int) -> None:
    """Every activation value of random inputs in the range lies inside the computed box."""
    from relu_doctor.analysis.prove_torch import _run
    from relu_doctor.backends.torch import prepare

    model = _random_block(seed, shift=-0.3)
    lo, hi = -0.5 + seed * 0.2, 0.7
    prepared = prepare(model, torch.device("cpu"))
    bounds, _ = _run(prepared, [{"name": "x", "shape": [3, 8, 8]}], (lo, hi), False, 2.0**-24)
    boxes = list(bounds.values())
    x = torch.rand(256, 3, 8, 8) * (hi - lo) + lo
    x[:8] = lo  # the corners of the box are inputs too
    x[8:16] = hi
    acts = _activations(model, x)
    assert len(acts) == len(boxes) == 4
    for act, box in zip(acts, boxes):
        assert box.out is not None
        assert (act >= box.out.lo.float()).all() and (act <= box.out.hi.float()).all(), box.name


def _interval_proven(report: rd.Report) -> dict[str, list[int]]:
    return {s.name: [i for i, r in zip(s.proof.indices, s.proof.rules) if r == INTERVAL] for s in report.sites}


def test_interval_rule_proves_what_bn_does_not() -> None:
    """A strongly negative shift kills neurons for inputs in [0, 1] but not for all inputs."""
    model = _random_block(0, shift=-3.0)
    ranged = rd.scan(model, input_shape=(3, 8, 8), samples=4, prove=True, input_range=(0, 1))
    free = rd.scan(model, input_shape=(3, 8, 8), samples=4, prove=True)
    assert sum(len(v) for v in _interval_proven(ranged).values()) > 0
    assert sum(s.proof.count for s in free.sites) < sum(s.proof.count for s in ranged.sites)


def _check_never_fires(model: torch.nn.Module, lo: float, hi: float, seed: int, onnx_path: Path | None) -> int:
    rng = np.random.default_rng(seed)
    data = rng.uniform(lo, hi, size=(64, 3, 8, 8)).astype(np.float32)
    data[0], data[1] = lo, hi
    target = model
    if onnx_path is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(data[:2]),), str(onnx_path), dynamo=False,
                              input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
        target = str(onnx_path)
    report = rd.scan(target, data, prove=True, input_range=(lo, hi))
    for site in report.sites:
        assert set(site.proof.indices) <= set(site.dead_indices), site.name  # proven dead => never fired
    return sum(s.proof.count for s in report.sites)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_proven_neurons_never_fire_torch_and_onnx(seed: int, tmp_path: Path) -> None:
    model = _random_block(seed, shift=-1.0)
    _check_never_fires(model, -1.0, 1.0, seed, None)
    _check_never_fires(model, -1.0, 1.0, seed, tmp_path / "m.onnx")


def _property(tmp_path: Path, examples: int) -> None:
    """Hypothesis: any seed, bias shift and input range; proofs hold on inputs in the range."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    proven = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None)
    @given(st.integers(0, 10_000), st.floats(-3.0, 1.0), st.floats(-2.0, 1.0), st.floats(0.01, 3.0),
           st.booleans())
    def check(seed: int, shift: float, lo: float, width: float, onnx: bool) -> None:
        model = _random_block(seed, shift)
        proven.append(_check_never_fires(model, lo, lo + width, seed, tmp_path / "p.onnx" if onnx else None))

    check()
    assert sum(proven) > 0  # the property was tested on real proofs, not only on empty ones


def test_property_random_models_and_ranges(tmp_path: Path) -> None:
    _property(tmp_path, 4)


@pytest.mark.slow
def test_property_random_models_and_ranges_long(tmp_path: Path) -> None:
    _property(tmp_path, 100)


def test_sample_agrees_with_catalogue_sample() -> None:
    """On a standard-normal sample, the proven neurons are exactly the dead ones (nothing else dies)."""
    c = case("mlp_tokens")
    report = rd.scan(c.build(), sample_data(c, 64), prove=True)
    assert [s.proof.indices for s in report.sites] == [s.dead_indices for s in report.sites]


def test_loaded_model_objects_are_not_changed() -> None:
    c = case("reused_relu")
    model = c.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rd.scan(model, input_shape=c.input_shape, samples=4, prove=True, input_range=(-1, 1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_pt2_and_onnx_objects(tmp_path: Path) -> None:
    c = case("mlp")
    paths = _saved(tmp_path, "mlp")
    program = load_model(paths["pt2"]).obj
    import onnx

    for obj in (program, onnx.load(str(paths["onnx"]))):
        report = rd.scan(obj, input_shape=c.input_shape, samples=4, prove=True)
        assert [s.proof.indices for s in report.sites] == [list(e.dead) for e in c.sites]


def test_cli_prove_json_gate_and_bad_threshold(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relu_doctor.cli import app

    c = case("mlp")
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(c.build(), (torch.zeros(2, 12),)), path)
    runner = CliRunner()
    ok = runner.invoke(app, ["scan", str(path), "--prove", "--input-range=-1,1", "-f", "json", "--samples", "4", "-q"])
    assert ok.exit_code == 0, ok.output
    sites = json.loads(ok.stdout)["sites"]
    assert [s["provably_dead_indices"] for s in sites] == [list(e.dead) for e in c.sites]
    assert [s["proof"] for s in sites] == [["zero_weights"] * len(e.dead) for e in c.sites]
    table = runner.invoke(app, ["scan", str(path), "--fail-provably-dead", "0.1", "--samples", "4", "-q"])
    assert table.exit_code == 1
    assert "Provably dead: 3 of 26 neurons" in table.stdout
    assert "provably dead ratio 12.5% > 10.0%" in table.stdout
    bad = runner.invoke(app, ["scan", str(path), "--fail-provably-dead", "30"])
    assert bad.exit_code == 2


def test_merged_shards_keep_proofs_and_their_gate() -> None:
    from relu_doctor.merge import merge_reports

    c = case("reused_relu")
    model = c.build()
    parts = [rd.scan(model, input_shape=c.input_shape, samples=8, shard=f"{i}/2", fail_provably_dead=0.3)
             for i in range(2)]
    merged = merge_reports(parts)
    assert [s.proof.indices for s in merged.sites] == [list(e.dead) for e in c.sites]
    assert not merged.gates.passed and [v.site for v in merged.gates.violations] == ["relu#2"]


def test_relu6_channels_stuck_at_6_are_proven_saturated(tmp_path: Path) -> None:
    import onnx

    c = case("relu6")  # BatchNorm weight 0, bias 7: ReLU6 outputs 6 on every input
    paths = _saved(tmp_path, "relu6")
    for obj in (c.build(), onnx.load(str(paths["onnx"]))):
        report = rd.scan(obj, input_shape=c.input_shape, samples=4, prove=True)
        assert [s.proof.saturated for s in report.sites] == [list(e.saturated) for e in c.sites]
        assert [s.proof.indices for s in report.sites] == [list(e.dead) for e in c.sites]
        d = report.sites[0].to_dict(False)
        assert d["provably_saturated_indices"] == list(c.sites[0].saturated)
        assert rd.Report.from_dict(report.to_dict()).sites[0].proof.saturated == list(c.sites[0].saturated)
