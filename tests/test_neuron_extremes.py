"""Per-neuron max and min (`neuron_extremes`, what `--neurons` writes as `max` / `min`).

The reference is computed without relu-doctor: the site outputs are recorded by a plain
torch function mode (every F.relu / hardtanh / leaky_relu / ... call, in call order) or,
for ONNX, fetched from onnxruntime as extra graph outputs, and reduced with numpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app
from relu_doctor.errors import UserError
from relu_doctor.merge import merge_reports
from relu_doctor.neurons import merge_neuron_arrays, neuron_arrays, read_neurons
from relu_doctor.report import Report
from relu_doctor.validate import check_report
from tests.models import case, sample_data

CASES = ("relu6", "leaky", "mlp_tokens", "reused_relu")
SAMPLES = 40
_ACTIVATIONS = {F.relu, torch.relu, torch.Tensor.relu, F.relu6, F.hardtanh, F.leaky_relu, F.prelu, F.rrelu,
                torch.clamp, torch.clip, torch.Tensor.clamp}
_ONNX_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "PRelu"}


class _Recorder(TorchFunctionMode):
    """The output of every top-level activation call (a mode is off inside its own handler,
    so an nn.ReLU6 calling F.hardtanh records once)."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[np.ndarray] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _ACTIVATIONS:
            self.outputs.append(out.detach().numpy().copy())
        return out


def _extremes(outputs: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron max and min of a site's outputs (batches stacked), NaN ignored."""
    y = np.concatenate(outputs)
    cols = np.moveaxis(y, axis, -1).reshape(-1, y.shape[axis])
    return np.nanmax(cols, axis=0).astype(np.float64), np.nanmin(cols, axis=0).astype(np.float64)


def torch_reference(name: str, data: np.ndarray, axes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    model = case(name).build().eval()
    rec = _Recorder()
    with torch.no_grad(), rec:
        model(torch.from_numpy(data))
    assert len(rec.outputs) == len(axes), "one recorded call per site"
    return [_extremes([y], axis) for y, axis in zip(rec.outputs, axes)]


def onnx_reference(path: Path, data: np.ndarray, axes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    taps = [n.output[0] for n in model.graph.node if n.op_type in _ONNX_ACTIVATIONS]
    assert len(taps) == len(axes), "one activation node per site"
    model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in taps)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(taps, {session.get_inputs()[0].name: data})
    return [_extremes([y], axis) for y, axis in zip(outs, axes)]


def scan_arrays(model: Any, data: np.ndarray, **kw: Any) -> tuple[Report, dict[str, np.ndarray]]:
    report = rd.scan(model, data, batch_size=16, neuron_extremes=True, warn=False, **kw)
    return report, neuron_arrays(report)


def _check(arrays: dict[str, np.ndarray], reference: list[tuple[np.ndarray, np.ndarray]], exact: bool) -> None:
    for i, (top, low) in enumerate(reference):
        assert bool(arrays[f"{i}/extremes"])
        if exact:
            np.testing.assert_array_equal(arrays[f"{i}/max"], top)
            np.testing.assert_array_equal(arrays[f"{i}/min"], low)
        else:  # onnxruntime's kernels round differently from torch's (float32)
            np.testing.assert_allclose(arrays[f"{i}/max"], top, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(arrays[f"{i}/min"], low, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_max_and_min_equal_the_recorded_outputs_in_every_format(
        name: str, all_formats: Callable[[str], dict[str, Path]]) -> None:
    c = case(name)
    data = sample_data(c, SAMPLES)
    report, arrays = scan_arrays(c.build(), data)
    axes = [s.axis for s in report.sites]
    reference = torch_reference(name, data, axes)
    _check(arrays, reference, exact=True)
    for site, expected in zip(report.sites, c.sites, strict=True):  # the planted dead never exceed 0
        dead = list(expected.dead)
        assert np.all(arrays[f"{site.index}/max"][dead] <= 0)
        assert np.all(arrays[f"{site.index}/max"][site.counters.fires > 0] > 0)
    paths = all_formats(name)
    for fmt in ("script", "trace", "pt2"):
        if fmt in paths:
            _check(scan_arrays(str(paths[fmt]), data)[1], reference, exact=True)
    onnx_arrays = scan_arrays(str(paths["onnx"]), data)[1]
    _check(onnx_arrays, onnx_reference(paths["onnx"], data, axes), exact=True)
    _check(onnx_arrays, reference, exact=False)


def test_nan_entries_are_ignored_and_counted_apart() -> None:
    """A NaN input row: the extremes skip NaN (as the site max does), on the torch and ONNX roads."""
    c = case("mlp")
    data = sample_data(c, SAMPLES)
    data[3, 0] = np.nan
    report, arrays = scan_arrays(c.build(), data)
    assert sum(s.counters.nonfinite for s in report.sites) > 0
    _check(arrays, torch_reference("mlp", data, [s.axis for s in report.sites]), exact=True)


@pytest.mark.parametrize("fmt", ["module", "onnx"])
def test_merged_shards_arrays_equal_the_whole_scans(fmt: str, all_formats: Callable[[str], dict[str, Path]],
                                                    tmp_path: Path) -> None:
    c = case("relu6")
    data = sample_data(c, SAMPLES)

    def model() -> Any:
        return c.build() if fmt == "module" else str(all_formats("relu6")["onnx"])

    whole = neuron_arrays(rd.scan(model(), data, batch_size=8, neuron_extremes=True, warn=False))
    parts = [rd.scan(model(), data, batch_size=8, shard=f"{i}/3", neuron_extremes=True, warn=False)
             for i in range(3)]
    # through the JSON files, as `relu-doctor merge` reads them
    read = [Report.from_dict(check_report(json.loads(json.dumps(p.to_dict())))) for p in parts]
    by_reports = neuron_arrays(merge_reports(read))
    by_arrays = merge_neuron_arrays([neuron_arrays(p) for p in parts])
    for merged in (by_reports, by_arrays):
        for key in whole:
            if key.endswith(("/max", "/min", "/site_max", "/fires", "/samples_fired", "/entries", "/extremes")):
                np.testing.assert_array_equal(merged[key], whole[key], err_msg=key)


def test_a_part_without_extremes_makes_them_not_measured_and_says_so() -> None:
    c = case("relu6")
    data = sample_data(c, SAMPLES)
    with_ = rd.scan(c.build(), data, shard="0/2", neuron_extremes=True, warn=False)
    without = rd.scan(c.build(), data, shard="1/2", warn=False)
    merged = merge_reports([with_, without], labels=["a.json", "b.json"])
    assert any("b.json kept no per-neuron max/min" in w for w in merged.warnings)
    arrays = neuron_arrays(merged)
    assert not arrays["0/extremes"] and np.isnan(arrays["0/max"]).all()
    assert np.isfinite(arrays["0/min"]).all()  # relu6 is bounded: its minimum is always kept
    fused = merge_neuron_arrays([neuron_arrays(with_), neuron_arrays(without)])
    assert np.isnan(fused["0/max"]).all() and not fused["0/extremes"]
    np.testing.assert_array_equal(fused["0/min"], arrays["0/min"])


def _keys(d: Any, at: str = "") -> set[str]:
    if isinstance(d, dict):
        return {f"{at}.{k}" for k in d} | {x for k, v in d.items() for x in _keys(v, f"{at}.{k}")}
    if isinstance(d, list):
        return {x for v in d for x in _keys(v, f"{at}[]")}
    return set()


def test_the_default_scans_json_is_unchanged() -> None:
    c = case("leaky")
    data = sample_data(c, SAMPLES)
    default = rd.scan(c.build(), data, batch_size=16, warn=False).to_dict()
    asked = rd.scan(c.build(), data, batch_size=16, neuron_extremes=True, warn=False).to_dict()
    counters = {"rows", "samples", "fires", "sample_fires", "abs_sum", "min", "total", "max", "nonfinite"}
    for site in default["sites"]:
        assert set(site["counters"]) == counters  # the v1 counters, no new key
    added = _keys(asked) - _keys(default)
    assert added == {".sites[].counters.neuron_max", ".sites[].counters.neuron_min"}
    for a, d in zip(asked["sites"], default["sites"]):  # and the same values everywhere else
        a["counters"].pop("neuron_max")
        a["counters"].pop("neuron_min")
        assert a == d
    assert neuron_arrays(Report.from_dict(default))["0/extremes"] == np.asarray(False)


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c.update(neuron_max=[5.0] * len(c["fires"])), "positive for a neuron that never fired"),
    (lambda c: c.pop("neuron_min"), "give both or neither"),
    (lambda c: c.update(neuron_min=[x + 100 if x is not None else None for x in c["neuron_max"]]),
     "above the same neuron's neuron_max"),
])
def test_validation_refuses_extremes_that_contradict_the_counts(tamper: Any, message: str) -> None:
    c = case("relu6")
    doc = rd.scan(c.build(), sample_data(c, SAMPLES), neuron_extremes=True, warn=False).to_dict()
    check_report(json.loads(json.dumps(doc)))  # as scanned: consistent
    assert doc["sites"][0]["dead"] > 0
    tamper(doc["sites"][0]["counters"])
    with pytest.raises(UserError, match=message):
        check_report(doc)


def test_cli_scan_neurons_writes_measured_max_and_min(tmp_path: Path) -> None:
    c = case("mlp_tokens")
    data = sample_data(c, SAMPLES)
    np.save(tmp_path / "x.npy", data)
    torch.jit.script(c.build()).save(str(tmp_path / "m.pt"))
    out = CliRunner().invoke(app, ["scan", str(tmp_path / "m.pt"), "--data", str(tmp_path / "x.npy"),
                                   "--neurons", str(tmp_path / "n.npz"), "-o", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    arrays = read_neurons(tmp_path / "n.npz")
    reference = torch_reference("mlp_tokens", data, [int(a) for a in arrays["axes"]])
    _check(arrays, reference, exact=True)


def _dying(dead: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    with torch.no_grad():
        model[0].bias.fill_(0.5)
        model[0].weight[:dead] = 0
        model[0].bias[:dead] = -1  # planted: these neurons' output is exactly 0, max 0
    return model


def _reference_over_time(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    outs = [_dying(dead)(x).detach().numpy() for dead in (0, 1, 3)]
    return np.stack([y.max(0) for y in outs]).astype(np.float64), np.stack([y.min(0) for y in outs]).astype(np.float64)


@pytest.mark.parametrize("extremes", [True, False])
def test_timeline_neurons_from_a_watch_history(extremes: bool, tmp_path: Path) -> None:
    path, x = tmp_path / "relu.jsonl", torch.randn(16, 4)
    for dead in (0, 1, 3):
        model = _dying(dead)
        with rd.watch(model, every=1, window=1, history=path, start_step=10 * dead, neuron_extremes=extremes) as w:
            model(x)
            w.step()
    result = CliRunner().invoke(app, ["timeline", str(path), "--neurons", str(tmp_path / "n.npz"), "-f", "json"])
    assert result.exit_code == 0, result.output
    n = read_neurons(tmp_path / "n.npz")
    assert n["0/max"].shape == (3, 6) and n["0/extremes"].tolist() == [extremes] * 3
    if extremes:
        top, low = _reference_over_time(x)
        np.testing.assert_array_equal(n["0/max"], top)
        np.testing.assert_array_equal(n["0/min"], low)
        assert (n["0/max"] == 0).sum(axis=1).tolist() == [0, 1, 3]
    else:  # recorded without: not measured, never a made-up 0
        assert np.isnan(n["0/max"]).all() and np.isnan(n["0/min"]).all()


def test_timeline_neurons_from_checkpoints_measures_extremes(tmp_path: Path) -> None:
    x = torch.randn(16, 4)
    np.save(tmp_path / "x.npy", x.numpy())
    for step, dead in ((3, 0), (100, 1), (200, 3)):
        torch.jit.script(_dying(dead)).save(str(tmp_path / f"ckpt-{step}.pt"))
    result = CliRunner().invoke(app, ["timeline", *sorted(str(p) for p in tmp_path.glob("ckpt-*.pt")),
                                      "--data", str(tmp_path / "x.npy"), "--neurons", str(tmp_path / "n.npz"),
                                      "-f", "json"])
    assert result.exit_code == 0, result.output
    n = read_neurons(tmp_path / "n.npz")
    top, low = _reference_over_time(x)
    np.testing.assert_array_equal(n["0/max"], top)
    np.testing.assert_array_equal(n["0/min"], low)


def test_onnx_minimum_of_zero_is_plus_zero(all_formats: Callable[[str], dict[str, Path]]) -> None:
    """The pool road takes min as -max(-y): a neuron whose minimum is 0 must read 0.0, as torch
    gives it, not -0.0 (equal, but printed and written differently)."""
    c = case("relu6")
    arrays = scan_arrays(str(all_formats("relu6")["onnx"]), sample_data(c, SAMPLES))[1]
    low = arrays["0/min"]
    assert np.any(low == 0) and not np.any(np.signbit(low[low == 0]))
