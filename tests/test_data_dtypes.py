"""Data that is not float32: one rule for every format.

Integer data for an integer input (token ids) stays integer; for a float input it is
converted with values unchanged, and a warning says so; float data for an integer input
is refused with that cause. The answers come from running the model by hand.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.errors import UserError


class Pixels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) / 255.0 - 0.5)  # takes raw 0..255 pixels as floats


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 6)
        self.relu = nn.ReLU()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc(self.embed(ids)))


def _formats(model: nn.Module, example: torch.Tensor, folder: Path) -> dict[str, object]:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(str(folder / "m.pt"))
        batch = torch.export.Dim("batch", min=1)
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), folder / "m.pt2")
        torch.onnx.export(model, (example,), str(folder / "m.onnx"), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    return {"eager": model, "torchscript": folder / "m.pt", "pt2": folder / "m.pt2", "onnx": folder / "m.onnx"}


def _fires(model: nn.Module, x: torch.Tensor, axis: int) -> np.ndarray:
    with torch.no_grad():
        y = model(x)
    dims = tuple(d for d in range(y.dim()) if d != axis)
    return (y > 0).sum(dim=dims).numpy()


def test_uint8_pixels_for_a_float_input_are_converted_alike_in_every_format(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Pixels()
    pixels = np.random.default_rng(0).integers(0, 256, (10, 3, 6, 6)).astype(np.uint8)
    want = _fires(model.eval(), torch.from_numpy(pixels).float(), 1)
    for fmt, obj in _formats(model, torch.zeros(2, 3, 6, 6), tmp_path).items():
        report = rd.scan(obj, pixels)
        np.testing.assert_array_equal(report.sites[0].counters.fires, want, err_msg=fmt)
        assert any("is uint8" in w and "converted" in w for w in report.warnings), (fmt, report.warnings)
        assert report.sample["inputs"][0]["dtype"] == "float32", fmt


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_token_ids_stay_integers_in_every_format(tmp_path: Path, dtype: type) -> None:
    torch.manual_seed(0)
    model = Tokens()
    ids = np.random.default_rng(0).integers(0, 20, (12, 5)).astype(dtype)
    want = _fires(model.eval(), torch.from_numpy(ids.astype(np.int64)), 2)
    for fmt, obj in _formats(model, torch.zeros(2, 5, dtype=torch.int64), tmp_path).items():
        report = rd.scan(obj, ids)
        np.testing.assert_array_equal(report.sites[0].counters.fires, want, err_msg=fmt)
        assert not any("converted" in w for w in report.warnings), fmt


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_float_data_for_token_ids_is_refused_with_that_cause(tmp_path: Path, fmt: str) -> None:
    paths = _formats(Tokens(), torch.zeros(2, 5, dtype=torch.int64), tmp_path)
    with pytest.raises(UserError, match="takes int64 .integers such as token ids"):
        rd.scan(paths[fmt], np.zeros((4, 5), np.float32))


def test_data_for_an_optional_argument_is_said_to_be_unused(tmp_path: Path) -> None:
    """A scripted forward(x, mask: Optional[Tensor] = None) takes x; a mask in the .npz is
    not fed (relu-doctor feeds the required inputs), and the scan says so."""
    from tests.zoo_models import build_optional_mask

    path = tmp_path / "m.pt"
    torch.jit.script(build_optional_mask()).save(str(path))
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    report = rd.scan(path, {"x": x, "mask": np.zeros((6, 24), np.float32)})
    assert [w for w in report.warnings if "'mask' is not among the inputs the model requires (x)" in w]


@pytest.mark.parametrize("form", ["tensor", "list", "dict"])
def test_a_pt_file_of_bfloat16_or_grad_tensors_reads_as_data_does(tmp_path: Path, form: str) -> None:
    """A .pt file holds what data= takes: bfloat16 (read as float32, which holds every value)
    and tensors that require grad. Both raised 'cannot read data file' before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    x = torch.randn(12, 4).to(torch.bfloat16)
    path = tmp_path / "x.pt"
    saved = {"tensor": x, "list": [x], "dict": {"input": x}}[form]
    torch.save(saved, path)
    want = rd.scan(model, data=x.float().numpy(), warn=False)
    got = rd.scan(model, data=str(path), warn=False)
    assert got.sites[0].counters.fires.tolist() == want.sites[0].counters.fires.tolist()
    torch.save(torch.randn(12, 4, requires_grad=True), path)
    assert rd.scan(model, data=str(path), warn=False).sample["samples"] == 12
