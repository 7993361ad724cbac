"""The kinds registry: records, the tables derived from them, ONNX patterns, the neuron-axis rule.

Expected answers are written out by hand from the SPEC (section 3, 4), not read back
from the registry's own tables."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from relu_doctor.kinds import (
    ABSENT,
    ACTIVATION_MODULES,
    KINDS,
    classify_aten,
    classify_onnx,
    is_graph_candidate,
    onnx_writer,
    split_op_name,
)
from relu_doctor.kinds import axis as ax
from relu_doctor.kinds.records import RECORDS


def test_one_record_per_kind_and_the_spec_kinds() -> None:
    names = [k.name for k in RECORDS]
    assert len(names) == len(set(names))
    assert set(names) == {"relu", "relu6", "clip", "leaky_relu", "prelu", "rrelu",
                          "elu", "selu", "celu", "gelu", "silu", "hardswish", "mish", "softplus"}
    assert {n for n, k in KINDS.items() if k.grad_blocked} == {"relu", "relu6", "clip"}
    assert {n for n, k in KINDS.items() if k.bounded} == {"relu6", "clip"}
    assert {n for n, k in KINDS.items() if k.leaks_when_patched} == {"relu", "relu6", "clip"}


def test_activation_modules_come_from_the_records() -> None:
    assert {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "Hardtanh", "Threshold", "GELU"} <= ACTIVATION_MODULES
    assert "Conv2d" not in ACTIVATION_MODULES


@pytest.mark.parametrize(("op", "args", "kwargs", "want"), [
    ("relu", (None,), {}, ("relu", {})),
    ("relu_", (None,), {}, ("relu", {})),
    ("clamp", (None, 0), {}, ("relu", {})),
    ("clamp", (None,), {"min": 0.0}, ("relu", {})),
    ("clamp_min_", (None, 0), {}, ("relu", {})),
    ("clamp", (None, 0, 6), {}, ("relu6", {})),
    ("clamp", (None, 0.0, 2.5), {}, ("clip", {"max": 2.5})),
    ("clamp", (None, -1, 6), {}, None),
    ("clamp", (None, None, 6), {}, None),
    ("hardtanh", (None, 0.0, 6.0), {}, ("relu6", {})),
    ("hardtanh", (None,), {}, None),  # default (-1, 1)
    ("hardtanh_", (None, 0.0, 1.0), {}, ("clip", {"max": 1.0})),
    ("relu6", (None,), {}, ("relu6", {})),
    ("threshold", (None, 0, 0), {}, ("relu", {})),
    ("threshold", (None, 0.5, 0), {}, None),
    ("leaky_relu", (None, 0.2), {}, ("leaky_relu", {"negative_slope": 0.2})),
    ("leaky_relu_", (None,), {}, ("leaky_relu", {"negative_slope": 0.01})),
    ("_prelu_kernel", (None, None), {}, ("prelu", {})),
    ("gelu", (None,), {}, None),  # smooth: only with include_smooth
    ("add", (None, None), {}, None),
])
def test_classify_aten(op: str, args: tuple, kwargs: dict, want: tuple | None) -> None:
    got = classify_aten(op, args, kwargs)
    assert (None if got is None else (got.kind, dict(got.params))) == want


def test_smooth_kinds_need_include_smooth() -> None:
    assert classify_aten("gelu", (None,), {}, include_smooth=True).kind == "gelu"  # type: ignore[union-attr]
    assert classify_onnx("Elu", {}, [None]) is None
    assert classify_onnx("Elu", {}, [None], include_smooth=True).kind == "elu"  # type: ignore[union-attr]


F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(("op", "attrs", "inputs", "want"), [
    ("Relu", {}, [None], ("relu", {})),
    ("Clip", {}, [None, np.array(0.0, np.float32), np.array(6.0, np.float32)], ("relu6", {})),
    ("Clip", {}, [None, np.array(0.0, np.float32), ABSENT], ("relu", {})),
    ("Clip", {}, [None, np.array(0.0, np.float32), np.array(F32_MAX, np.float32)], ("relu", {})),
    ("Clip", {}, [None, np.array(0.0, np.float32), np.array(3.0, np.float32)], ("clip", {"max": 3.0})),
    ("Clip", {}, [None, np.array(0.0, np.float32), np.array([6.0, 3.0], np.float32)], None),  # a tensor bound
    ("Clip", {"min": 0.0, "max": 6.0}, [None], ("relu6", {})),  # opset < 11
    ("Clip", {}, [None, np.array(-1.0, np.float32)], None),
    ("LeakyRelu", {"alpha": np.float32(0.1)}, [None], ("leaky_relu", {"negative_slope": 0.1})),
    ("PRelu", {}, [None, None], ("prelu", {})),
    ("ThresholdedRelu", {"alpha": 0.0}, [None], ("relu", {})),
    ("ThresholdedRelu", {}, [None], None),
    ("Sigmoid", {}, [None], None),
])
def test_classify_onnx(op: str, attrs: dict, inputs: list, want: tuple | None) -> None:
    got = classify_onnx(op, attrs, inputs)
    assert (None if got is None else (got.kind, dict(got.params))) == want


def test_graph_candidates_and_writers() -> None:
    assert is_graph_candidate("aten", "relu_")
    assert is_graph_candidate("aten", "_transformer_encoder_layer_fwd")  # a fused kernel holding a relu
    assert is_graph_candidate("quantized", "linear_relu")
    assert not is_graph_candidate("aten", "add")
    assert split_op_name("aten::relu") == ("aten", "relu") == split_op_name("aten.relu")
    assert (onnx_writer("prelu"), onnx_writer("leaky_relu"), onnx_writer("clip")) == ("PRelu", "LeakyRelu", "Clip")


# ---- ONNX patterns, through find_sites on hand-built graphs ------------------------------------


def _model(nodes: list, inits: list) -> object:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _const(name: str, value: float) -> object:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def _sites(model: object, include_smooth: bool = False) -> list[tuple[str, str, str]]:
    from relu_doctor.backends.onnx_graph import find_sites

    return [(s.kind, s.output, s.data_input) for s in find_sites(model, include_smooth).sites]  # type: ignore[arg-type]


def test_max_zero_pattern_either_order() -> None:
    for inputs in (["x", "zero"], ["zero", "x"]):
        model = _model([helper.make_node("Max", inputs, ["y"])], [_const("zero", 0.0)])
        assert _sites(model) == [("relu", "y", "x")]
    model = _model([helper.make_node("Max", ["x", "one"], ["y"])], [_const("one", 1.0)])
    assert _sites(model) == []


def _hard_swish(divide_first: bool) -> object:
    nodes = [helper.make_node("Add", ["x", "three"], ["s"]), helper.make_node("Clip", ["s", "zero", "six"], ["c"])]
    if divide_first:
        nodes += [helper.make_node("Div", ["c", "six"], ["d"]), helper.make_node("Mul", ["x", "d"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])]
    return _model(nodes, [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0)])


@pytest.mark.parametrize("divide_first", [False, True])
def test_hard_swish_pattern_is_no_relu6_site(divide_first: bool) -> None:
    model = _hard_swish(divide_first)
    assert _sites(model) == []
    assert _sites(model, include_smooth=True) == [("hardswish", "y", "x")]


def test_relu6_of_shifted_input_without_division_stays_relu6() -> None:
    nodes = [helper.make_node("Add", ["x", "three"], ["s"]), helper.make_node("Clip", ["s", "zero", "six"], ["y"])]
    model = _model(nodes, [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0)])
    assert _sites(model) == [("relu6", "y", "s")]


def test_silu_pattern() -> None:
    nodes = [helper.make_node("Sigmoid", ["x"], ["g"]), helper.make_node("Mul", ["x", "g"], ["y"])]
    assert _sites(_model(nodes, [])) == []
    assert _sites(_model(nodes, []), include_smooth=True) == [("silu", "y", "x")]


# ---- the neuron-axis rule ---------------------------------------------------------------------------


def test_axis_through_permutations() -> None:
    assert ax.through_permutation(ax.CHANNEL, [0, 2, 3, 1]) == 3  # NCHW -> NHWC: channels last
    assert ax.through_permutation(ax.LAST, [0, 2, 1]) == -2  # (B, T, F) -> (B, F, T)
    assert ax.through_permutation(1, [0, 3, 1, 2]) == 2
    assert ax.torch_layout("transpose", 1, (None, 1, 2), (2, 8, 5), (2, 5, 8)) == 2
    assert ax.torch_layout("movedim", 1, (None, 1, -1), (2, 8, 4, 4), (2, 4, 4, 8)) == 3
    assert ax.torch_layout("numpy_T", 1, (None,), (3, 8), (8, 3)) == 0
    assert ax.onnx_layout("Transpose", 1, {"perm": [0, 2, 3, 1]}, None, None) == 3


def test_axis_through_reshapes() -> None:
    assert ax.through_reshape(1, (2, 8, 4, 4), (2, 8, 16)) == 1  # flatten(2): channels kept
    assert ax.through_reshape(1, (2, 8, 4, 4), (2, 128)) is None  # merged with H, W
    assert ax.through_reshape(ax.LAST, (2, 5, 16), (10, 16)) == -1  # flattened samples
    assert ax.through_reshape(3, (2, 4, 4, 8), (2, 16, 8)) == 2  # (B, H, W, C) -> (B, HW, C)
    assert ax.through_reshape(1, (2, 8), (1, 2, 8)) == 2  # unsqueeze(0)
    assert ax.onnx_layout("Reshape", 1, {}, None, [2, 8]) is None  # unknown shapes: unknown


def test_neuron_axis_rule() -> None:
    assert ax.neuron_axis(2, ax.LAST) == 1
    assert ax.neuron_axis(1, None) == 0
    assert ax.neuron_axis(4, None) == 1
    assert ax.neuron_axis(3, ax.LAST) == 2
    assert ax.neuron_axis(4, 3) == 3
    assert ax.neuron_axis(4, 0) == 1  # never the batch axis
    assert ax.neuron_axis(4, 3, "channel") == 1
    assert ax.neuron_axis(4, None, "last") == 3
