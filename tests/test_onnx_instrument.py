"""The instrumented graph: small outputs only, onnxruntime's fusions and layout kept, and
each reduction method (pool / reduce / raw) agreeing with the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import relu_doctor as rd
from relu_doctor.backends import onnx as onnx_backend
from relu_doctor.backends.onnx_graph import find_sites
from relu_doctor.backends.onnx_instrument import POOL, RAW, REDUCE, instrument, plan_sites
from relu_doctor.backends.onnx_session import make_session
from relu_doctor.backends.onnx_shapes import static_shapes

F = TensorProto.FLOAT


def two_convs(channels: int = 16) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Clip(0, 6): the shape onnxruntime fuses into NCHWc convolutions."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.2
    w1[3] = 0  # planted: channel 3 is 0 before the ReLU (dead) on every input
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1] * 4), helper.make_node("Relu", ["a"], ["r"], name="r"),
         helper.make_node("Conv", ["r", "w2"], ["b"], pads=[1] * 4),
         helper.make_node("Clip", ["b", "lo", "hi"], ["y"], name="c")],
        "g", [helper.make_tensor_value_info("x", F, ["N", 3, 8, 8])], [helper.make_tensor_value_info("y", F, None)],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                     numpy_helper.from_array(np.array(0, np.float32), "lo"),
                     numpy_helper.from_array(np.array(6, np.float32), "hi")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def planned(m: onnx.ModelProto, shape: list[int]) -> list:
    plans, _ = plan_sites(find_sites(m).sites, static_shapes(m, {"x": shape}), "auto")
    return plans


def data(n: int = 8) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_outputs_are_per_sample_and_neuron_never_the_activations() -> None:
    m = two_convs()
    plans = planned(m, [8, 3, 8, 8])
    assert [p.method for p in plans] == [POOL, POOL]
    session = ort.InferenceSession(instrument(m, plans).SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n for p in plans for n in p.outputs.values()]
    parts = {"r": 3, "c": 4}  # sum, max, count (+ min for the relu6)
    for plan, out in zip(plans, session.run(names, {"x": data()})):
        # (samples, parts x neurons, 1, 1), not the activation (samples, neurons, 8, 8)
        assert out.shape == (8, parts[plan.site.name] * 16, 1, 1), plan.site.name


def _optimized(m: onnx.ModelProto, tmp_path, name: str) -> list[onnx.NodeProto]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / name)
    options.log_severity_level = 3
    ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return list(onnx.load(str(tmp_path / name)).graph.node)


def test_conv_activation_fusion_and_blocked_layout_survive(tmp_path) -> None:
    """Tapping a fused Conv+ReLU output must not unfuse it, nor reorder the activation out of
    onnxruntime's NCHWc layout (only the tiny pooled results are reordered)."""
    m = two_convs()
    bare = _optimized(m, tmp_path, "bare.onnx")
    tapped = _optimized(instrument(m, planned(m, [8, 3, 8, 8])), tmp_path, "tapped.onnx")

    def fused(nodes: list) -> list:
        return [a.s for n in nodes if n.op_type in ("Conv", "FusedConv") for a in n.attribute if a.name == "activation"]

    def big_reorders(nodes: list) -> int:  # reorders of a convolution's output: an activation
        producer = {o: n.op_type for n in nodes for o in n.output}
        return sum(1 for n in nodes if n.op_type == "ReorderOutput" and producer.get(n.input[0]) == "Conv")

    assert not any(n.op_type in ("Relu", "Clip") for n in tapped if n.input[0] in ("a", "b"))
    assert fused(bare) == fused(tapped)[: len(fused(bare))]
    assert big_reorders(tapped) == big_reorders(bare)


def test_plan_methods_follow_rank_axis_and_dtype() -> None:
    m = two_convs()
    assert [p.method for p in plan_sites(find_sites(m).sites, static_shapes(m, {"x": [2, 3, 8, 8]}), "last")[0]] \
        == [REDUCE, REDUCE]
    assert [p.method for p in plan_sites(find_sites(m).sites, {}, "auto")[0]] == [RAW, RAW]


@pytest.mark.parametrize("method", ["reduce", "raw"])
def test_every_method_gives_the_same_counters(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    m, x = two_convs(), data(10)
    pooled = rd.scan(m, data=x, batch_size=4)
    if method == "raw":
        monkeypatch.setattr(onnx_backend, "static_shapes", lambda *a: {})
    else:  # a channel-last view of the same model sums the same entries per sample
        real = onnx_backend.plan_sites
        monkeypatch.setattr(onnx_backend, "plan_sites", lambda s, shapes, axis: _force_reduce(real(s, shapes, axis)))
    other = rd.scan(m, data=x, batch_size=4)
    # The reference: the Clip site's output is the model's own output y, reduced in numpy.
    (y,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    y_fires = (y > 0).sum((0, 2, 3))
    expected_dead = {"r": [3], "c": np.flatnonzero(y_fires == 0).tolist()}
    for a, b in zip(pooled.sites, other.sites):
        np.testing.assert_array_equal(a.counters.fires, b.counters.fires)
        np.testing.assert_array_equal(a.counters.sample_fires, b.counters.sample_fires)
        np.testing.assert_allclose(a.counters.abs_sum, b.counters.abs_sum, rtol=1e-5)
        assert a.dead_indices == b.dead_indices == expected_dead[a.name]
        assert (a.max, a.saturated, a.counters.rows) == (b.max, b.saturated, b.counters.rows)
    clip = other.site("c")
    np.testing.assert_array_equal(clip.counters.fires, y_fires)
    assert clip.saturated == int((y >= 6).all((0, 2, 3)).sum())
    assert clip.max == pytest.approx(float(y.max()), rel=1e-6)


def _force_reduce(result: tuple) -> tuple:
    plans, warnings = result
    for p in plans:
        p.method = REDUCE
    return plans, warnings


def test_tiny_positive_values_fire() -> None:
    """Every y > 0 counts exactly 1, subnormals included (as torch's y > 0 counts them):
    the smallest normal float, one or many subnormals in a row, subnormals beside normal
    values, the largest subnormal; -0.0 and tiny negatives count 0."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", F, ["N", 6, 8, 8])],
                              [helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    smallest, largest = np.float32(2.0**-149), np.nextafter(np.float32(2.0**-126), np.float32(0))
    x = np.zeros((4, 6, 8, 8), np.float32)
    x[:, 0, :2] = 1.2e-38  # smallest normal floats: 16 entries per sample
    x[1, 1, 0, 0] = 1e-44  # one subnormal
    x[2, 2, 0, :5] = smallest  # five of the smallest subnormal in one row (2**-22 each, once)
    x[3, 2, 1, 0], x[3, 2, 1, 1] = 1e-40, 1.0  # a subnormal beside a normal value
    x[0, 3] = largest  # a whole row of the largest subnormal
    x[1, 4, :4] = 3e-39
    x[2, 5, 0, 0], x[2, 5, 0, 1] = -0.0, -smallest  # not positive
    assert 0 < smallest < largest < 2.0**-126  # subnormal, and numpy keeps them: a sound reference
    site = rd.scan(m, data=x).sites[0]
    want = (x > 0).sum((0, 2, 3))
    np.testing.assert_array_equal(site.counters.fires, want)
    np.testing.assert_array_equal(site.counters.sample_fires, (x > 0).any((2, 3)).sum(0))
    assert want.tolist() == [64, 1, 7, 64, 32, 0] and site.dead_indices == [5]


def _chain(op: str, layers: int = 4) -> tuple[onnx.ModelProto, np.ndarray]:
    """Conv -> Relu (NCHWc-rewritten by onnxruntime) or MatMul -> Relu (not), `layers` times."""
    rng = np.random.default_rng(5)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = f"w{i}"
        if op == "Conv":
            inits.append(numpy_helper.from_array(rng.standard_normal((16, 3 if i == 0 else 16, 3, 3), np.float32), w))
            nodes.append(helper.make_node("Conv", [x, w], [f"z{i}"], pads=[1] * 4, name=f"main{i}"))
        else:
            inits.append(numpy_helper.from_array(rng.standard_normal((16, 16), np.float32), w))
            nodes.append(helper.make_node("MatMul", [x, w], [f"z{i}"], name=f"main{i}"))
        nodes.append(helper.make_node("Relu", [f"z{i}"], [f"y{i}"], name=f"relu{i}"))
        x = f"y{i}"
    shape = ["N", 3, 8, 8] if op == "Conv" else ["N", 10, 16]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", F, shape)],
                              [helper.make_tensor_value_info(x, F, None)], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    data = np.random.default_rng(6).standard_normal((4, *shape[1:])).astype(np.float32)
    return m, data


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_reductions_run_right_after_their_site(op: str, tmp_path) -> None:
    """The order onnxruntime runs nodes in decides how long each activation stays alive:
    every site's reductions must run before the next layer, not at the end of the graph."""
    m, x = _chain(op)
    plans, _ = plan_sites(find_sites(m).sites, static_shapes(m, {"x": list(x.shape)}), "auto")
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "p")
    session = make_session(instrument(m, plans), ["CPUExecutionProvider"], threads=1, options=options)
    session.run(None, {"x": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    ran = [e["name"] for e in sorted(events, key=lambda e: e["ts"])
           if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    main = [i for i, name in enumerate(ran) if "relu_doctor" not in name and "Reorder" not in name]
    taps = [i for i, name in enumerate(ran) if "relu_doctor" in name]
    assert len(main) >= 4 and len(taps) >= 4
    # only the last site's reductions may run after the last layer (in file order: all of them)
    assert sum(t > main[-1] for t in taps) <= len(taps) // 4
