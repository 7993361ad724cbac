"""ONNX spellings of a ReLU the exporters do not write but other tools do: Max(0, x),
Clip with bounds as inputs or (opset < 11) as attributes, ThresholdedRelu(alpha=0), and a
Relu inside an If branch. Each one leaks after the patch, and nothing else changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import relu_doctor as rd
from relu_doctor.patching import ScanOptions, patch_file

SLOPE = 0.5
X = h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 3, 3])
Y = h.make_tensor_value_info("y", T.FLOAT, ["N", 4, 3, 3])


def _front() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """x -> 1x1 identity conv -> + bias: channel 1 sits near -100 (dead), the others near +0.5."""
    bias = nh.from_array(np.array([0.5, -100, 0.5, 0.5], np.float32).reshape(1, 4, 1, 1), "bias")
    w = nh.from_array(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "w")
    return [h.make_node("Conv", ["x", "w"], ["conv"], name="conv"), h.make_node("Add", ["conv", "bias"], ["a"])], \
        [bias, w]


def opset17() -> onnx.ModelProto:
    nodes, inits = _front()
    inits += [nh.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0), ("lo", 0), ("hi", 6))]
    inits.append(nh.from_array(np.array(True), "cond"))
    then = h.make_graph([h.make_node("Relu", ["c"], ["t"], name="branch_relu")], "then", [],
                        [h.make_tensor_value_info("t", T.FLOAT, None)])
    other = h.make_graph([h.make_node("Identity", ["c"], ["e"])], "else", [],
                         [h.make_tensor_value_info("e", T.FLOAT, None)])
    nodes += [h.make_node("Max", ["zero", "a"], ["b"], name="max0"),
              h.make_node("Clip", ["b", "lo", "hi"], ["c"], name="clip6"),
              h.make_node("If", ["cond"], ["d"], name="if", then_branch=then, else_branch=other),
              h.make_node("ThresholdedRelu", ["d"], ["y"], alpha=0.0)]  # unnamed: a generated site name
    return h.make_model(h.make_graph(nodes, "g", [X], [Y], inits), opset_imports=[h.make_opsetid("", 17)])


def opset9() -> onnx.ModelProto:
    nodes, inits = _front()
    nodes.append(h.make_node("Clip", ["a"], ["y"], min=0.0, max=6.0))
    return h.make_model(h.make_graph(nodes, "g", [X], [Y], inits), opset_imports=[h.make_opsetid("", 9)],
                        ir_version=7)


@pytest.mark.parametrize(("build", "sites", "leak"), [(opset17, 4, SLOPE**4), (opset9, 1, SLOPE)])
def test_every_onnx_spelling_leaks(build: object, sites: int, leak: float, tmp_path: Path) -> None:
    model = build()  # type: ignore[operator]
    source, out = tmp_path / "m.onnx", tmp_path / "patched.onnx"
    onnx.save(model, str(source))
    outcome = patch_file(source, out, options=ScanOptions(input_shape=["4,3,3"], samples=32, device="cpu"),
                         slope=SLOPE)
    assert [p.dead for p in outcome.plan.sites] == [(1,)] * sites
    patched = onnx.load(str(out))
    onnx.checker.check_model(patched)
    rescan = rd.scan(patched, input_shape=(4, 3, 3), samples=32, fail_dead_ratio=0.0)
    assert [s.name for s in rescan.sites] == [p.name for p in outcome.plan.sites]  # names survive the patch
    assert rescan.gates.passed and {s.kind for s in rescan.sites} == {"prelu"}
    x = np.random.default_rng(3).standard_normal((2, 4, 3, 3), dtype=np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(patched.SerializeToString()).run(None, {"x": x})[0]
    assert np.array_equal(np.delete(after, 1, axis=1), np.delete(before, 1, axis=1))
    np.testing.assert_allclose(after[:, 1], (x[:, 1] - 100) * leak, rtol=1e-5)
    if build is opset17:
        assert any("If branch" in note for note in outcome.verification.notes)


def test_a_non_float_site_is_refused(tmp_path: Path) -> None:
    nodes = [h.make_node("Sub", ["x", "k"], ["a"]), h.make_node("Relu", ["a"], ["y"], name="int_relu")]
    k = nh.from_array(np.array([0, 100, 0], np.int32), "k")
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.INT32, ["N", 3])],
                         [h.make_tensor_value_info("y", T.INT32, ["N", 3])], [k])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    report = rd.scan(model, input_shape=(3,), samples=8)
    if not report.sites:
        pytest.skip("the scan does not measure integer sites")
    with pytest.raises(rd.UserError, match="only float sites"):
        rd.patch(model, report)
