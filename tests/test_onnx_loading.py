"""Loading ONNX files: external data only from beside the model, clear errors for broken files,
and an ONNX scan that never imports torch (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import relu_doctor as rd
from relu_doctor.backends.onnx_loading import load_onnx

ROOT = Path(__file__).resolve().parents[1]


def tiny_model() -> onnx.ModelProto:
    """Gemm -> Relu with a planted dead neuron (row of zeros, bias -1), weights big enough
    (> 1 KiB) to be written as external data."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    b = np.full(16, 0.5, np.float32)
    w[5], b[5] = 0, -1
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
         helper.make_node("Relu", ["z"], ["y"], name="act")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def save_external(folder: Path, location: str = "weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save_model(tiny_model(), str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((20, 32)).astype(np.float32)


def test_external_data_beside_the_model_loads(tmp_path: Path) -> None:
    path = save_external(tmp_path)
    assert (tmp_path / "weights.bin").exists()
    report = rd.scan(path, data=x())
    assert report.model["format"] == "onnx" and report.sites[0].dead_indices == [5]


def _point_outside(path: Path, location: str) -> None:
    """Rewrite every external-data location of the saved model (what a hostile file does)."""
    m = onnx.load_model(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(m, str(path))


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, where: str) -> None:
    path = save_external(tmp_path / "model")
    secret = tmp_path / "secret.bin"
    (tmp_path / "model" / "weights.bin").rename(secret)
    if where == "parent":
        _point_outside(path, "../secret.bin")
    elif where == "absolute":
        _point_outside(path, str(secret))
    else:
        (tmp_path / "model" / "weights.bin").symlink_to(secret)
    with pytest.raises(rd.UserError, match="outside the model's folder") as err:
        rd.scan(path, data=x())
    assert err.value.exit_code == 2


def test_missing_external_data_is_a_user_error(tmp_path: Path) -> None:
    path = save_external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(rd.UserError, match="missing"):
        load_onnx(path)


def test_truncated_external_data_is_a_user_error(tmp_path: Path) -> None:
    path = save_external(tmp_path)
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(rd.UserError, match="shorter"):
        load_onnx(path)


@pytest.mark.parametrize("content", [
    pytest.param(b"\x08\x07\x12\x05hello" + bytes(range(256)) * 8, id="garbage"),
    pytest.param(b"this is a text file, not a model\n" * 20, id="text"),
    pytest.param("truncated", id="truncated"),
])
def test_corrupt_files_are_user_errors(tmp_path: Path, content: object) -> None:
    path = tmp_path / "m.onnx"
    if content == "truncated":
        full = tiny_model().SerializeToString()
        content = full[: len(full) // 2]
    path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(rd.UserError, match="cannot read .* as ONNX") as err:
        rd.scan(path, data=x())
    assert err.value.exit_code == 2 and str(path) in err.value.message


def test_model_that_fails_the_checker_is_a_user_error(tmp_path: Path) -> None:
    m = tiny_model()
    m.graph.node[1].input[0] = "nowhere"  # reads a tensor no node produces
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path))
    with pytest.raises(rd.UserError, match="not a valid ONNX model"):
        load_onnx(path)


def test_data_that_does_not_fit_is_a_user_error() -> None:
    with pytest.raises(rd.UserError, match=r"has shape \(4, 31\), but the model expects \(samples, 32\)"):
        rd.scan(tiny_model(), data=np.zeros((4, 31), np.float32))


_NO_TORCH = """
import json, sys
import numpy as np
import relu_doctor
report = relu_doctor.scan({path!r}, data={data!r})
from relu_doctor.cli import app
try:
    app(["scan", {path!r}, "--data", {data!r}, "--format", "json", "-o", {out!r}])
except SystemExit as e:
    code = e.code
print(json.dumps({{"torch": "torch" in sys.modules, "sites": len(report.sites), "code": code}}))
"""


def test_an_onnx_scan_never_imports_torch(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(tiny_model(), str(path))
    np.save(tmp_path / "x.npy", x())
    script = _NO_TORCH.format(path=str(path), data=str(tmp_path / "x.npy"), out=str(tmp_path / "r.json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "sites": 1, "code": 0}
    assert json.loads((tmp_path / "r.json").read_text())["sites"][0]["dead_indices"] == [5]
