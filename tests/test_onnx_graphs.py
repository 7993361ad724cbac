"""Hand-built ONNX graphs (onnx.helper), one per pattern, against a naive numpy reference.

The reference does not use relu-doctor's reductions: it runs the plain graph in
onnxruntime with the site tensors as extra outputs and reduces them in numpy. Dead
neurons are planted by construction: a Conv channel with zero weights and bias -1 is -1
before the activation on every input (dead); bias 7 makes a ReLU6 output 6 (saturated).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import relu_doctor as rd
from relu_doctor.backends.onnx_graph import find_sites

F = TensorProto.FLOAT
C = 6
DEAD = (1, 4)
SATURATED = (2,)


# ---- building graphs ------------------------------------------------------------------


def model(nodes: list, inits: list, inputs: list | None = None, opset: int = 17,
          outputs: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        inputs or [helper.make_tensor_value_info("x", F, ["N", 3, 6, 6])],
        outputs or [helper.make_tensor_value_info("out", F, None)],
        initializer=inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 8)  # what this onnxruntime accepts
    return m


def conv(name: str = "conv", out: str = "z", bias: float = -1.0, planted: tuple = DEAD,
         saturated: tuple = (), x: str = "x", cin: int = 3) -> tuple[list, list]:
    """A 3x3 Conv with live random channels and planted constant ones."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((C, cin, 3, 3)).astype(np.float32) * 0.5
    b = rng.uniform(0.1, 0.4, C).astype(np.float32)
    for i in planted:
        w[i], b[i] = 0, bias
    for i in saturated:
        w[i], b[i] = 0, 7.0
    inits = [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    return [helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, pads=[1] * 4)], inits


def const(name: str, value: float | list, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype), name)


def data(n: int = 10, seed: int = 0, shape: tuple = (3, 6, 6)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# ---- the naive reference ----------------------------------------------------------------


def run_with_outputs(m: onnx.ModelProto, tensors: list[str], feeds: dict) -> list[np.ndarray]:
    tapped = onnx.ModelProto()
    tapped.CopyFrom(m)
    for t in tensors:
        tapped.graph.output.append(onnx.ValueInfoProto(name=t))
    # Same optimisation level as the scan: a differently fused Conv rounds differently.
    session = ort.InferenceSession(tapped.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = m.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    if not fixed:
        return session.run(tensors, feeds)
    n = len(next(iter(feeds.values())))  # a fixed batch: one sample at a time, padded by repetition
    runs = [session.run(tensors, {k: np.repeat(v[i:i + 1], fixed, 0) for k, v in feeds.items()}) for i in range(n)]
    return [np.concatenate([r[j][:1] for r in runs]) for j in range(len(tensors))]


def reference(y: np.ndarray, axis: int) -> dict:
    """Counters of one site from its full output (samples first), straight from the definitions."""
    ys = np.moveaxis(y, axis, -1).reshape(y.shape[0], -1, y.shape[axis]).astype(np.float64)
    finite = np.isfinite(ys)
    clean = np.where(finite, ys, 0)
    return {
        "rows": ys.shape[0] * ys.shape[1],
        "samples": ys.shape[0],
        "fires": (ys > 0).sum((0, 1)),
        "sample_fires": (ys > 0).any(1).sum(0),
        "abs_sum": np.abs(clean).sum((0, 1)),
        "total": clean.sum(),
        "max": np.where(np.isnan(ys), -np.inf, ys).max(),  # extremes ignore NaN
        "min": np.where(np.isnan(ys), np.inf, ys).min((0, 1)),
        "nonfinite": int((~finite).sum()),
    }


def check_against_reference(m: onnx.ModelProto, x: np.ndarray, batch_size: int = 4,
                            sites: tuple[str, ...] = ("out",), **scan: object) -> rd.Report:
    """Scan `m` and compare every site with the numpy reduction of its output tensor.

    `sites` names the tensors the test built as activation outputs, in execution order: the
    expected sites come from how the graph was built, never from relu-doctor's own search."""
    report = rd.scan(m, data=x, batch_size=batch_size, **scan)
    assert len(report.sites) == len(sites), [s.name for s in report.sites]
    ys = run_with_outputs(m, list(sites), {m.graph.input[0].name: x})
    for site, y in zip(report.sites, ys):
        ref, c = reference(y, site.axis), site.counters
        assert (c.rows, c.samples, c.nonfinite) == (ref["rows"], ref["samples"], ref["nonfinite"]), site.name
        np.testing.assert_array_equal(c.fires, ref["fires"], err_msg=site.name)
        np.testing.assert_array_equal(c.sample_fires, ref["sample_fires"], err_msg=site.name)
        np.testing.assert_allclose(c.abs_sum, ref["abs_sum"], rtol=1e-5, atol=1e-5, err_msg=site.name)
        assert c.total == pytest.approx(ref["total"], rel=1e-5, abs=1e-4), site.name
        assert c.max == ref["max"] or (np.isnan(c.max) and np.isnan(ref["max"])), site.name
        if c.min is not None:
            np.testing.assert_array_equal(c.min, ref["min"], err_msg=site.name)
        assert list(site.shape) == list(y.shape[1:]), site.name
    return report


# ---- each pattern ---------------------------------------------------------------------


def test_relu_after_conv_has_the_planted_dead_channels() -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("Relu", ["z"], ["out"], name="act")], inits)
    r = check_against_reference(m, data())
    (site,) = r.sites
    assert (site.name, site.kind, site.op, site.axis, site.neurons) == ("act", "relu", "Relu", 1, C)
    assert site.dead_indices == list(DEAD) and site.grad_blocked


def test_leaky_relu_keeps_alpha_and_counts_negative_values() -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("LeakyRelu", ["z"], ["out"], name="act", alpha=0.2)], inits)
    (site,) = check_against_reference(m, data()).sites
    assert (site.kind, site.params, site.grad_blocked) == ("leaky_relu", {"negative_slope": 0.2}, False)
    assert site.dead_indices == list(DEAD)


def test_prelu_per_channel() -> None:
    nodes, inits = conv()
    slope = const("slope", np.linspace(0.05, 0.3, C).reshape(C, 1, 1).tolist())
    m = model(nodes + [helper.make_node("PRelu", ["z", "slope"], ["out"], name="act")], inits + [slope])
    (site,) = check_against_reference(m, data()).sites
    assert (site.kind, site.op, site.dead_indices) == ("prelu", "PRelu", list(DEAD))


@pytest.mark.parametrize("bounds, kind, params", [
    ((0.0, None), "relu", {}), ((0.0, 6.0), "relu6", {}), ((0.0, 1.0), "clip", {"max": 1.0}),
])
@pytest.mark.parametrize("spelling", ["initializer", "constant_node", "attributes"])
def test_clip_with_lower_bound_zero(bounds: tuple, kind: str, params: dict, spelling: str) -> None:
    lo, hi = bounds
    nodes, inits = conv(saturated=SATURATED)
    if spelling == "attributes":  # opset < 11 (Clip-6): min / max are attributes
        attrs = {"min": lo} | ({"max": hi} if hi is not None else {})
        nodes.append(helper.make_node("Clip", ["z"], ["out"], name="act", **attrs))
        m = model(nodes, inits, opset=10)
    else:
        names = ["z", "lo", "hi" if hi is not None else ""]
        if spelling == "initializer":
            inits += [const("lo", lo)] + ([const("hi", hi)] if hi is not None else [])
        else:
            nodes.append(helper.make_node("Constant", [], ["lo"], value=const("lo_t", lo)))
            if hi is not None:
                nodes.append(helper.make_node("Constant", [], ["hi"], value=const("hi_t", hi)))
        nodes.append(helper.make_node("Clip", [n for n in names if n != ""] if hi is None else names, ["out"],
                                      name="act"))
        m = model(nodes, inits, opset=11)
    (site,) = check_against_reference(m, data()).sites
    assert (site.kind, site.op, site.params) == (kind, "Clip", params)
    assert site.dead_indices == list(DEAD)
    assert site.saturated == (len(SATURATED) if kind in ("relu6", "clip") else 0)


def test_clip_with_another_lower_bound_is_not_a_site() -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("Clip", ["z", "lo"], ["out"])], inits + [const("lo", -1.0)])
    assert find_sites(m).sites == []


@pytest.mark.parametrize("order", [("z", "zero"), ("zero", "z")])
def test_max_with_zero_is_a_relu(order: tuple) -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("Max", list(order), ["out"], name="act")], inits + [const("zero", 0.0)])
    (site,) = check_against_reference(m, data()).sites
    assert (site.kind, site.op, site.dead_indices) == ("relu", "Max", list(DEAD))


def hard_swish(shift: float = 3.0, divide: bool = True, times_x: bool = True) -> onnx.ModelProto:
    """x * Clip(x + 3, 0, 6) / 6, as exporters write a hard-swish out."""
    nodes, inits = conv()
    nodes += [helper.make_node("Add", ["z", "three"], ["s"]),
              helper.make_node("Clip", ["s", "lo", "hi"], ["c"], name="clip")]
    last = "c"
    if times_x:
        nodes.append(helper.make_node("Mul", ["z", "c"], ["m"]))
        last = "m"
    if divide:
        nodes.append(helper.make_node("Div", [last, "six"], ["out"], name="div"))
    else:
        nodes.append(helper.make_node("Identity", [last], ["out"]))
    inits += [const("three", shift), const("lo", 0.0), const("hi", 6.0), const("six", 6.0)]
    return model(nodes, inits)


def test_written_out_hard_swish_is_not_a_relu6_site() -> None:
    assert find_sites(hard_swish()).sites == []
    assert find_sites(hard_swish(times_x=False)).sites == []  # hard-sigmoid: Clip(x + 3, 0, 6) / 6
    smooth = find_sites(hard_swish(), include_smooth=True).sites
    assert [(s.kind, s.output) for s in smooth] == [("hardswish", "out")]
    check_against_reference(hard_swish(), data(), include_smooth=True)


def test_relu6_of_a_shifted_input_without_the_division_stays_a_site() -> None:
    assert [s.kind for s in find_sites(hard_swish(divide=False)).sites] == ["relu6"]
    assert [s.kind for s in find_sites(hard_swish(shift=2.0)).sites] == ["relu6"]


def test_x_times_hard_sigmoid_and_sigmoid_are_smooth_sites_only_with_include_smooth() -> None:
    nodes, inits = conv()
    nodes += [helper.make_node("HardSigmoid", ["z"], ["hs"], alpha=1 / 6, beta=0.5),
              helper.make_node("Mul", ["z", "hs"], ["h"]),
              helper.make_node("Sigmoid", ["h"], ["sg"]),
              helper.make_node("Mul", ["sg", "h"], ["e"]),
              helper.make_node("Elu", ["e"], ["out"])]
    m = model(nodes, inits)
    assert find_sites(m).sites == []
    r = check_against_reference(m, data(), sites=("h", "e", "out"), include_smooth=True)
    assert [s.kind for s in r.sites] == ["hardswish", "silu", "elu"]
    assert not any(s.grad_blocked for s in r.sites)


def test_fixed_batch_of_one() -> None:
    nodes, inits = conv()
    x_info = helper.make_tensor_value_info("x", F, [1, 3, 6, 6])
    m = model(nodes + [helper.make_node("Relu", ["z"], ["out"], name="act")], inits, inputs=[x_info])
    r = check_against_reference(m, data(5), batch_size=32)
    assert r.sample["batch_size"] == 1 and r.sites[0].counters.samples == 5


def test_fixed_batch_pads_the_last_batch_and_counts_only_real_rows() -> None:
    nodes, inits = conv()
    x_info = helper.make_tensor_value_info("x", F, [4, 3, 6, 6])
    m = model(nodes + [helper.make_node("Relu", ["z"], ["out"], name="act")], inits, inputs=[x_info])
    x = data(10)
    x[8:] = 50.0  # the last, padded batch differs from the others: padding must not be counted
    report = rd.scan(m, data=x)
    tensors = run_with_outputs(model(nodes + [helper.make_node("Relu", ["z"], ["out"], name="act")], inits),
                               ["out"], {"x": x})
    ref = reference(tensors[0], 1)
    c = report.sites[0].counters
    assert (c.samples, c.rows) == (10, ref["rows"])
    np.testing.assert_array_equal(c.fires, ref["fires"])
    np.testing.assert_allclose(c.abs_sum, ref["abs_sum"], rtol=1e-5)


def test_two_inputs_from_an_npz_keyed_by_name(tmp_path) -> None:
    n1, i1 = conv("c1", "z1", x="a")
    n2, i2 = conv("c2", "z2", x="b", planted=(0,))
    nodes = n1 + n2 + [helper.make_node("Add", ["z1", "z2"], ["s"]), helper.make_node("Relu", ["s"], ["out"])]
    inputs = [helper.make_tensor_value_info(n, F, ["N", 3, 6, 6]) for n in ("a", "b")]
    m = model(nodes, i1 + i2, inputs=inputs)
    a, b = data(7, 1), data(7, 2)
    np.savez(tmp_path / "d.npz", b=b, a=a)  # keyed by name, not in input order
    r = rd.scan(m, data=str(tmp_path / "d.npz"), batch_size=3)
    (y,) = run_with_outputs(m, ["out"], {"a": a, "b": b})
    np.testing.assert_array_equal(r.sites[0].counters.fires, reference(y, 1)["fires"])
    assert r.sites[0].name == "Relu_3"  # unnamed node: op type and index


def test_relu_inside_an_if_is_measured_and_an_untaken_branch_is_reported() -> None:
    nodes, inits = conv()
    then_g = helper.make_graph([helper.make_node("Relu", ["z"], ["t"], name="then_relu")], "then", [],
                               [helper.make_tensor_value_info("t", F, None)])
    else_g = helper.make_graph([helper.make_node("LeakyRelu", ["z"], ["e"], name="else_leaky")], "else", [],
                               [helper.make_tensor_value_info("e", F, None)])
    nodes += [helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
              helper.make_node("Greater", ["mx", "limit"], ["cond"]),
              helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)]
    m = model(nodes, inits + [const("limit", -1e30)])
    r = rd.scan(m, data=data(), batch_size=4)
    assert [s.name for s in r.sites] == ["then_relu"]
    assert r.sites[0].dead_indices == list(DEAD)
    assert any("else_leaky" in w and "never ran" in w for w in r.warnings)
    (y,) = run_with_outputs(model(conv()[0] + [helper.make_node("Relu", ["z"], ["out"])], conv()[1]),
                            ["out"], {"x": data()})
    np.testing.assert_array_equal(r.sites[0].counters.fires, reference(y, 1)["fires"])


def test_relu_inside_a_loop_is_listed_as_not_measured() -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F, None)],
    )
    nodes, inits = conv()
    nodes += [helper.make_node("Relu", ["z"], ["r"], name="outer"),
              helper.make_node("Loop", ["trip", "", "r"], ["out"], body=body, name="loop")]
    m = model(nodes, inits + [const("trip", 2, np.int64)])
    r = rd.scan(m, data=data(), batch_size=4)
    assert [s.name for s in r.sites] == ["outer"]
    assert any("loop/body/Relu_1" in w and "not measured" in w for w in r.warnings)


def test_non_finite_values_are_counted_exactly() -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("LeakyRelu", ["z"], ["out"], name="act")], inits)
    x = data()
    x[2, 0, 1, 1], x[6, 1, 2, 2], x[7, 2, 0, 0] = np.nan, np.inf, -np.inf
    site = check_against_reference(m, x).sites[0]
    assert site.nonfinite > 0 and site.max is None


def test_matmul_activation_uses_the_last_axis_and_overrides_apply() -> None:
    w = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    w[:, 3] = 0
    bias = np.full(8, 0.2, np.float32)
    bias[3] = -1
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["z"]),
             helper.make_node("Relu", ["z"], ["out"], name="act")]
    m = model(nodes, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")],
              inputs=[helper.make_tensor_value_info("x", F, ["N", 4, 5])])
    x = data(9, shape=(4, 5))
    (site,) = check_against_reference(m, x).sites
    assert (site.axis, site.neurons, site.dead_indices) == (2, 8, [3])
    (site,) = check_against_reference(m, x, neuron_axis="channel").sites
    assert (site.axis, site.neurons) == (1, 4)


def test_conv_activation_with_last_axis_override_and_an_mlp() -> None:
    nodes, inits = conv()
    m = model(nodes + [helper.make_node("Relu", ["z"], ["out"], name="act")], inits)
    (site,) = check_against_reference(m, data(), neuron_axis="last").sites
    assert (site.axis, site.neurons) == (3, 6)
    gemm = [helper.make_node("Gemm", ["x", "w"], ["z"], transB=1), helper.make_node("Relu", ["z"], ["out"])]
    w = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    m2 = model(gemm, [numpy_helper.from_array(w, "w")], inputs=[helper.make_tensor_value_info("x", F, ["N", 5])])
    (site,) = check_against_reference(m2, data(6, shape=(5,))).sites
    assert (site.axis, site.neurons, site.shape) == (1, 7, [7])


@pytest.mark.parametrize("opset", [9, 11, 13, 18])
def test_reduce_path_across_opsets(opset: int) -> None:
    """float16 activations and a channel-last site take the Reduce* path, whose axes moved
    from attribute to input at opsets 13 (ReduceSum) and 18 (the others)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="half"),
             helper.make_node("Clip", ["r", "lo", "hi"], ["out"], name="clip") if opset >= 11
             else helper.make_node("Clip", ["r"], ["out"], name="clip", min=0.0, max=6.0)]
    inits = [numpy_helper.from_array(np.array(v, np.float16), n) for n, v in (("lo", 0), ("hi", 6))]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3, 5])
    m = model(nodes, inits if opset >= 11 else [], inputs=[x_info], opset=opset,
              outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)])
    x = (data(6, shape=(3, 5)) * 4).astype(np.float16)
    r = check_against_reference(m, x, sites=("r", "out"))
    assert [s.kind for s in r.sites] == ["relu", "relu6"]


def test_duplicate_and_missing_node_names_are_made_unique() -> None:
    nodes, inits = conv()
    nodes += [helper.make_node("Relu", ["z"], ["a"], name="act"), helper.make_node("Relu", ["a"], ["b"], name="act"),
              helper.make_node("Relu", ["b"], ["out"])]
    m = model(nodes, inits)
    assert [s.name for s in find_sites(m).sites] == ["act", "act#2", "Relu_3"]


def test_symbolic_non_batch_dim_asks_for_input_shape() -> None:
    nodes, inits = conv()
    x_info = helper.make_tensor_value_info("x", F, ["N", 3, "H", "W"])
    m = model(nodes + [helper.make_node("Relu", ["z"], ["out"])], inits, inputs=[x_info])
    with pytest.raises(rd.UserError, match="input-shape"):
        rd.scan(m)
    r = rd.scan(m, input_shape="x=3,6,6", samples=8)
    assert r.sites[0].dead_indices == list(DEAD)


def test_flattened_samples_are_split_back_into_samples() -> None:
    """relu(gemm(x.reshape(B * T, F))): the rows are sample-major, so (B, T, F) is the
    per-sample view, as in the torch backend (tests/test_scan_formats.py)."""
    w = np.zeros((3, 6), np.float32)
    w[1:] = np.random.default_rng(3).standard_normal((2, 6))
    bias = np.array([-1, 0.1, 0.1], np.float32)  # planted: feature 0 never fires
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["r"]),
             helper.make_node("Gemm", ["r", "w", "b"], ["z"], transB=1),
             helper.make_node("Relu", ["z"], ["out"], name="act")]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b"), const("flat", [-1, 6], np.int64)]
    m = model(nodes, inits, inputs=[helper.make_tensor_value_info("x", F, ["N", 4, 6])])
    x = data(10, shape=(4, 6))
    logits = x.reshape(-1, 6) @ w.T + bias
    site = rd.scan(m, data=x, batch_size=3).sites[0]  # 10 = 3 + 3 + 3 + 1: uneven batches
    assert (site.shape, site.axis, site.dead_indices) == ([4, 3], 2, [0])
    np.testing.assert_array_equal(site.counters.fires, (logits > 0).sum(0))
    np.testing.assert_array_equal(site.counters.sample_fires, (logits.reshape(10, 4, 3) > 0).any(1).sum(0))


def test_flattened_conv_activations_are_split_back_into_samples() -> None:
    """A per-frame CNN: (B, T, 3, 6, 6) -> (B * T, 3, 6, 6) -> Conv -> Relu, reduced in the graph."""
    conv_nodes, inits = conv()
    nodes = [helper.make_node("Reshape", ["clip", "frames"], ["x"])] + conv_nodes + \
        [helper.make_node("Relu", ["z"], ["out"], name="act")]
    m = model(nodes, inits + [const("frames", [-1, 3, 6, 6], np.int64)],
              inputs=[helper.make_tensor_value_info("clip", F, ["N", 2, 3, 6, 6])])
    x = data(7, shape=(2, 3, 6, 6))
    site = rd.scan(m, data=x, batch_size=3).sites[0]
    (y,) = run_with_outputs(m, ["out"], {"clip": x})
    per_sample = y.reshape(7, 2, C, 36)
    assert (site.shape, site.axis, site.dead_indices) == ([2, C, 6, 6], 2, list(DEAD))
    np.testing.assert_array_equal(site.counters.fires, (per_sample > 0).sum((0, 1, 3)))
    np.testing.assert_array_equal(site.counters.sample_fires, (per_sample > 0).any((1, 3)).sum(0))
    assert (site.counters.samples, site.counters.rows) == (7, 7 * 2 * 36)


def test_a_site_without_the_batch_first_is_counted_whole_with_a_warning() -> None:
    nodes, inits = conv()
    nodes += [helper.make_node("ReduceMean", ["z"], ["m"], axes=[0], keepdims=1),  # (1, C, 6, 6) per batch
              helper.make_node("Relu", ["m"], ["out"], name="act")]
    r = rd.scan(model(nodes, inits), data=data(8), batch_size=4)
    assert r.sites[0].counters.samples == 2  # one row per batch
    assert any("act" in w and "not the batch" in w for w in r.warnings)
