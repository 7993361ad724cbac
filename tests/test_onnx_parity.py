"""Parity: every catalogue case exported to ONNX reports what the PyTorch scan reports.

Both exporters: the TorchScript-based one (dynamo=False) for every case, and the
torch.export-based one (dynamo=True, needs onnxscript) where it can export the case.
The dynamo exporter takes seconds per model, so by default it runs on three cases that
cover its spellings (clamp -> Max(x, 0), relu6 -> Clip, Linear on tokens -> MatMul);
the other cases are in the slow tier (`pytest -m slow`, run by .ci/run).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from tests.models import CASES, ONNX_OPSET, Case, sample_data

# ONNX has no RReLU: in eval mode it is a LeakyReLU with the mean slope, and exporters write that.
ONNX_KIND = {"rrelu": "leaky_relu"}
DYNAMO_DEFAULT = ("functional", "relu6", "mlp_tokens")
DYNAMO_UNSUPPORTED = {"leaky": "the dynamo exporter has no ONNX function for aten.rrelu_with_noise"}


def export(case: Case, folder: Path, dynamo: bool) -> Path:
    model = case.build()
    example = torch.from_numpy(sample_data(case, n=4, seed=1))
    path = folder / f"{case.name}.{'dynamo' if dynamo else 'ts'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            program.save(str(path))
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=ONNX_OPSET)
    return path


def params() -> list:
    out = [pytest.param(c, False, id=f"{c.name}-torchscript") for c in CASES]
    for c in CASES:
        marks = [] if c.name in DYNAMO_DEFAULT else [pytest.mark.slow]
        if c.name in DYNAMO_UNSUPPORTED:
            marks.append(pytest.mark.skip(reason=DYNAMO_UNSUPPORTED[c.name]))
        out.append(pytest.param(c, True, id=f"{c.name}-dynamo", marks=marks))
    return out


@pytest.mark.parametrize("case, dynamo", params())
def test_onnx_export_reports_what_the_torch_scan_reports(case: Case, dynamo: bool, tmp_path: Path) -> None:
    x = sample_data(case, n=40, seed=3)
    expected = rd.scan(case.build(), data=x, batch_size=16)
    got = rd.scan(export(case, tmp_path, dynamo), data=x, batch_size=16)
    assert got.model["format"] == "onnx"
    assert len(got.sites) == len(expected.sites) == len(case.sites)
    for o, t, planted in zip(got.sites, expected.sites, case.sites):
        where = f"{case.name}: {o.name} vs {t.name}"
        assert o.kind == ONNX_KIND.get(t.kind, t.kind), where
        assert (o.neurons, o.axis, o.shape) == (t.neurons, t.axis, t.shape), where
        assert o.dead_indices == t.dead_indices == list(planted.dead), where
        assert o.saturated == t.saturated == len(planted.saturated), where
        assert (o.dormant, o.always_on, o.rarely_active) == (t.dormant, t.always_on, t.rarely_active), where
        assert abs(o.sparsity - t.sparsity) <= 1e-6, where
        assert o.mean == pytest.approx(t.mean, rel=1e-5, abs=1e-6), where
        np.testing.assert_array_equal(o.counters.sample_fires, t.counters.sample_fires, err_msg=where)
    assert abs(got.summary.sparsity - expected.summary.sparsity) <= 1e-6
    assert got.summary.dormant == expected.summary.dormant


class _NanRelu6(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.r = torch.nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.r(self.fc(x))


def test_nan_inputs_give_the_same_extremes_in_onnx_and_torch(tmp_path: Path) -> None:
    """NaN is ignored by max/min in both backends: no NaN minimum that reads back as saturated."""
    import relu_doctor as rd
    from relu_doctor.report import Report

    model = _NanRelu6().eval()
    path = tmp_path / "nan.onnx"
    torch.onnx.export(model, (torch.randn(2, 4),), str(path), input_names=["x"], dynamic_axes={"x": {0: "b"}},
                      dynamo=False)
    data = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
    data[3, 1] = np.nan
    torch_site = rd.scan(model, data).sites[0]
    onnx_report = rd.scan(path, data)
    onnx_site = onnx_report.sites[0]
    assert onnx_site.nonfinite == torch_site.nonfinite == 3
    assert onnx_site.max == pytest.approx(torch_site.max, rel=1e-6)
    np.testing.assert_allclose(onnx_site.counters.min, torch_site.counters.min, rtol=1e-6)
    again = Report.from_dict(json.loads(onnx_report.to_json())).sites[0]
    assert again.saturated == 0


class _Taps(torch.nn.Module):
    """ReLU and ReLU6 on the input itself (a 1x1 identity conv keeps onnxruntime's NCHWc
    layout and the pool road), so planted values reach the sites unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1, bias=False)
        torch.nn.init.eye_(self.conv.weight.data.view(4, 4))
        self.relu, self.relu6 = torch.nn.ReLU(), torch.nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.relu(y) + self.relu6(y)


def test_subnormals_zeros_and_the_bound_count_alike_in_onnx_and_torch(tmp_path: Path) -> None:
    """Exact counts where float tricks could slip: subnormal positives (one, many, beside
    normal values), -0.0, values exactly at ReLU6's bound (saturation), planted per neuron;
    torch and ONNX must agree on every count and extreme, and with numpy."""
    model = _Taps().eval()
    path = tmp_path / "taps.onnx"
    torch.onnx.export(model, (torch.zeros(2, 4, 6, 6),), str(path), input_names=["x"],
                      dynamic_axes={"x": {0: "b"}}, dynamo=False, opset_version=ONNX_OPSET)
    x = np.zeros((8, 4, 6, 6), np.float32)
    x[:, 0] = np.float32(2.0**-149)  # channel 0: the smallest subnormal everywhere
    x[::2, 1, 0, :3] = np.float32(1e-40)  # channel 1: a few subnormals beside normal values
    x[::2, 1, 1] = 0.5
    x[:, 2] = 6.0  # channel 2: exactly at ReLU6's bound everywhere (saturated; min 6)
    x[:, 3] = -0.0  # channel 3: negative zero (dead)
    x[1, 3, 0, 0] = np.float32(3e-39)  # ... but one subnormal positive in one sample
    torch_report, onnx_report = rd.scan(model, x), rd.scan(path, x)
    want = (x > 0).sum((0, 2, 3))
    assert want.tolist() == [288, 36, 288, 1]
    for t, o in zip(torch_report.sites, onnx_report.sites):
        assert (t.kind, t.dead_indices, t.saturated) == (o.kind, o.dead_indices, o.saturated)
        np.testing.assert_array_equal(o.counters.fires, want)
        np.testing.assert_array_equal(t.counters.fires, want)
        np.testing.assert_array_equal(o.counters.sample_fires, t.counters.sample_fires)
        assert o.max == t.max == 6.0
        if t.kind == "relu6":
            np.testing.assert_array_equal(o.counters.min, t.counters.min)
            assert o.counters.min.tolist() == [2.0**-149, 0.0, 6.0, 0.0] and o.saturated == 1
