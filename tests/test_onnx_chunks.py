"""Sub-batches for memory-bound ONNX graphs (backends/onnx_chunks.py): which graphs are
split, and a split scan reports exactly what a whole-batch scan reports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import relu_doctor as rd
from relu_doctor.backends import onnx as onnx_backend
from relu_doctor.backends import onnx_chunks
from relu_doctor.backends.onnx_graph import find_sites
from relu_doctor.backends.onnx_instrument import plan_sites
from relu_doctor.backends.onnx_shapes import static_shapes

F = TensorProto.FLOAT


def _model(depthwise: bool, pinned_batch: int | None = None) -> onnx.ModelProto:
    """Conv -> ReLU6 -> Conv -> Relu: depthwise 1x1 convs (memory-bound: 1 multiply-add per
    output) or dense 5x5 ones (16 x 25 = 400 per output); with
    `pinned_batch`, a Reshape to [pinned_batch, 16, -1] before a last Relu (a graph that only
    runs at the batch size it was exported at)."""
    rng = np.random.default_rng(1)
    c = 16
    shape = (c, 1, 1, 1) if depthwise else (c, c, 5, 5)
    attrs = {"group": c} if depthwise else {"pads": [2] * 4}
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), f"w{i}") for i in (1, 2)]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], **attrs), helper.make_node("Clip", ["a", "lo", "hi"], ["r6"]),
             helper.make_node("Conv", ["r6", "w2"], ["b"], **attrs), helper.make_node("Relu", ["b"], ["y"])]
    out = "y"
    if pinned_batch:
        inits.append(numpy_helper.from_array(np.array([pinned_batch, 16, -1], np.int64), "pin"))
        nodes += [helper.make_node("Reshape", ["y", "pin"], ["flat"]), helper.make_node("Relu", ["flat"], ["z"])]
        out = "z"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["N", c, 8, 8])],
                              [helper.make_tensor_value_info(out, F, None)], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _rows(m: onnx.ModelProto, rows: int) -> int | None:
    shapes = static_shapes(m, {"x": [rows, 16, 8, 8]})
    plans, _ = plan_sites(find_sites(m).sites, shapes, "auto")
    return onnx_chunks.sub_batch_rows(m, shapes, plans, rows)


def test_only_memory_bound_graphs_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_chunks, "SUB_BATCH_BYTES", 2 * 16 * 64 * 4)  # two samples' activation
    assert _rows(_model(depthwise=True), 8) == 2
    assert _rows(_model(depthwise=False), 8) is None  # 400 multiply-adds per site output
    assert _rows(_model(depthwise=True), 2) is None  # the batch is a sub-batch already
    monkeypatch.setattr(onnx_chunks, "SUB_BATCH_BYTES", 8 << 20)
    assert _rows(_model(depthwise=True), 8) is None  # small activations: whole batches
    m = _model(depthwise=False)
    shapes = static_shapes(m, {"x": [1, 16, 8, 8]})
    assert onnx_chunks.macs_per_sample(m.graph, shapes) == 2 * 16 * 64 * (16 * 25)


def _scan_both_ways(m: onnx.ModelProto, x: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                    sub_batch_bytes: int = 16 * 64 * 4, batch_size: int = 4) -> tuple:
    split_rows = []
    real = onnx_chunks.sub_batch_rows

    def spy(*args: object) -> int | None:
        split_rows.append(real(*args))  # type: ignore[arg-type]
        return split_rows[-1]

    monkeypatch.setattr(onnx_chunks, "SUB_BATCH_BYTES", sub_batch_bytes)  # one sample per sub-batch
    monkeypatch.setattr(onnx_backend, "sub_batch_rows", spy)
    split = rd.scan(m, data=x, batch_size=batch_size)
    monkeypatch.setattr(onnx_backend, "sub_batch_rows", lambda *a: None)
    whole = rd.scan(m, data=x, batch_size=batch_size)
    return split, whole, split_rows


def _assert_same(split: rd.Report, whole: rd.Report) -> None:
    assert [s.name for s in split.sites] == [s.name for s in whole.sites]
    for a, b in zip(split.sites, whole.sites):
        for field in ("fires", "sample_fires"):
            np.testing.assert_array_equal(getattr(a.counters, field), getattr(b.counters, field))
        np.testing.assert_array_equal(a.counters.abs_sum, b.counters.abs_sum)  # the same partials, added alike
        assert a.counters.total == b.counters.total
        assert (a.counters.rows, a.counters.samples, a.max, a.saturated) == \
            (b.counters.rows, b.counters.samples, b.max, b.saturated)
        if b.counters.min is not None:
            np.testing.assert_array_equal(a.counters.min, b.counters.min)


def test_a_split_scan_counts_what_a_whole_batch_scan_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(2).standard_normal((10, 16, 8, 8)).astype(np.float32)
    x[3, 5] = 100.0  # saturates ReLU6 channels in one sample: the minimum matters
    split, whole, rows = _scan_both_ways(_model(depthwise=True), x, monkeypatch)
    assert rows == [1]
    _assert_same(split, whole)
    # and against numpy: the ReLU6 site is Clip(depthwise conv)
    w1 = numpy_helper.to_array(_model(depthwise=True).graph.initializer[0]).reshape(1, 16, 1, 1)
    r6 = np.clip(x * w1, 0, 6)
    np.testing.assert_array_equal(split.site(split.sites[0].name).counters.fires, (r6 > 0).sum((0, 2, 3)))


def test_a_graph_pinned_to_its_batch_falls_back_to_whole_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reshape to [4, 16, -1]: at one sample per sub-batch the last site has 4 rows, not 1, so
    the scan runs whole batches of 4 instead, with the same result."""
    x = np.random.default_rng(4).standard_normal((8, 16, 8, 8)).astype(np.float32)
    split, whole, rows = _scan_both_ways(_model(depthwise=True, pinned_batch=4), x, monkeypatch)
    assert rows == [1] and len(split.sites) == 3
    _assert_same(split, whole)


def test_a_relu_rnn_is_never_split_even_when_its_sequence_is_as_long_as_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A relu RNN's hidden states are (seq, directions, batch, hidden); with seq == batch the
    first axis looked like the batch and the graph was split, but onnxruntime's gemms round
    differently per batch size: the sums then differed from a whole batch's in the last bits."""
    from tests.test_onnx_rnn import FEATURES, HIDDEN, SEQ, _rnn_model

    x = np.random.default_rng(4).standard_normal((2 * SEQ, SEQ, FEATURES)).astype(np.float32) * 2
    split, whole, split_rows = _scan_both_ways(_rnn_model(2), x, monkeypatch, sub_batch_bytes=SEQ * 2 * HIDDEN * 4,
                                               batch_size=SEQ)
    assert split_rows and all(r is None for r in split_rows)
    _assert_same(split, whole)
