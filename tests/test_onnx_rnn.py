"""A relu RNN node's hidden states are a site in ONNX, measured as torch measures the layer:
batch first, (batch, seq, directions x hidden), the neurons last.

The answers come from a numpy loop over the RNN's equations written out here, on a
hand-built graph with planted dead units (zero weights into them and a negative bias),
and from the torch module the ONNX file was exported from."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import relu_doctor as rd
from relu_doctor.errors import UserError
from relu_doctor.patching import ScanOptions, patch_file

BATCH, SEQ, FEATURES, HIDDEN = 12, 5, 4, 6
DEAD = {0: 2, 1: 5}  # direction -> the hidden unit that never fires


def _weights(directions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((directions, HIDDEN, FEATURES)).astype(np.float32)
    r = (rng.standard_normal((directions, HIDDEN, HIDDEN)) * 0.3).astype(np.float32)
    b = (rng.standard_normal((directions, 2 * HIDDEN)) * 0.1).astype(np.float32)
    for d in range(directions):
        unit = DEAD[d]
        w[d, unit], r[d, unit], b[d, unit], b[d, HIDDEN + unit] = 0, 0, -1, 0
    return w, r, b


def _rnn_model(directions: int, activation: str = "Relu", op: str = "RNN") -> onnx.ModelProto:
    """One RNN node reading X (seq, batch, features) through a Transpose of the batch-first
    input, as torch exports a batch_first RNN (onnxruntime runs no RNN of layout 1)."""
    w, r, b = _weights(directions)
    attrs = dict(hidden_size=HIDDEN, activations=[activation] * directions,
                 direction="bidirectional" if directions == 2 else "forward")
    seq_first = helper.make_node("Transpose", ["input"], ["X"], perm=[1, 0, 2], name="to_seq_first")
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y", "Y_h"], name="rnn", **attrs)
    head = helper.make_node("ReduceSum", ["Y"], ["out"], keepdims=0, name="head")
    graph = helper.make_graph(
        [seq_first, node, head], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                      ["batch", SEQ, FEATURES])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def _hidden_states(x: np.ndarray, directions: int) -> np.ndarray:
    """(batch, seq, directions x hidden) from the RNN equations, x batch first."""
    w, r, b = (a.astype(np.float64) for a in _weights(directions))
    out = np.zeros((len(x), SEQ, directions, HIDDEN))
    for d in range(directions):
        h = np.zeros((len(x), HIDDEN))
        for t in (range(SEQ) if d == 0 else reversed(range(SEQ))):
            h = np.maximum(x[:, t] @ w[d].T + h @ r[d].T + b[d, :HIDDEN] + b[d, HIDDEN:], 0)
            out[:, t, d] = h
    return out.reshape(len(x), SEQ, directions * HIDDEN)


@pytest.mark.parametrize("directions", [1, 2])
def test_relu_rnn_node_is_measured_batch_first(directions: int) -> None:
    x = np.random.default_rng(1).standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32) * 2
    report = rd.scan(_rnn_model(directions), data=x, batch_size=4, warn=False)
    (site,) = report.sites
    h = _hidden_states(x, directions)
    assert (site.name, site.kind, site.op, site.neurons, site.axis) == ("rnn", "relu", "RNN", directions * HIDDEN, 2)
    np.testing.assert_array_equal(site.counters.fires, (h > 0).sum((0, 1)))
    np.testing.assert_array_equal(site.counters.sample_fires, (h > 0).any(1).sum(0))
    np.testing.assert_allclose(site.counters.abs_sum, h.sum((0, 1)), rtol=1e-5)
    assert site.dead_indices == [d * HIDDEN + unit for d, unit in DEAD.items() if d < directions]
    assert not any("not measured" in w for w in report.warnings)


def test_a_bidirectional_torch_rnn_gives_the_same_answer_as_its_onnx_export() -> None:
    torch.manual_seed(0)
    rnn = torch.nn.RNN(FEATURES, HIDDEN, nonlinearity="relu", batch_first=True, bidirectional=True).eval()
    with torch.no_grad():
        rnn.bias_ih_l0_reverse[3] = -50  # planted: the reverse direction's unit 3 never fires
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(x)[0]

    net = Net()
    x = np.random.default_rng(2).standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings about the RNN's checks
        torch.onnx.export(net, (torch.from_numpy(x[:2]),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})
    eager = rd.scan(net, data=x, batch_size=4, warn=False)
    exported = rd.scan(onnx.load_from_string(buffer.getvalue()), data=x, batch_size=4, warn=False)
    assert len(eager.sites) == len(exported.sites) == 1
    a, b = eager.sites[0], exported.sites[0]
    assert (a.neurons, a.axis) == (b.neurons, b.axis) == (2 * HIDDEN, 2)
    np.testing.assert_array_equal(a.counters.fires, b.counters.fires)
    assert a.dead_indices == b.dead_indices and HIDDEN + 3 in b.dead_indices


@pytest.mark.parametrize(("activation", "op"), [("Tanh", "RNN"), ("Relu", "GRU")])
def test_other_recurrent_nodes_stay_what_they_were(activation: str, op: str) -> None:
    """A tanh RNN holds no ReLU; a GRU with Relu gates is listed as not measured."""
    model = _rnn_model(1, activation, op)
    if op == "GRU":  # a GRU has three gates' weights and two activations per direction
        graph = model.graph
        w, r, b = _weights(1)
        del graph.initializer[:]
        graph.initializer.extend([numpy_helper.from_array(np.tile(w, (1, 3, 1)), "W"),
                                  numpy_helper.from_array(np.tile(r, (1, 3, 1)), "R"),
                                  numpy_helper.from_array(np.tile(b, (1, 3)), "B")])
        attr = next(a for a in graph.node[1].attribute if a.name == "activations")
        attr.CopyFrom(helper.make_attribute("activations", ["Sigmoid", "Relu"]))
    x = np.random.default_rng(3).standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        report = rd.scan(model, data=x, batch_size=4)
    assert report.sites == []
    assert any("not measured" in w for w in report.warnings) == (op == "GRU")


def test_patch_refuses_an_rnn_site_with_a_hint_and_revive_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "rnn.onnx"
    onnx.save(_rnn_model(2), str(path))
    np.save(tmp_path / "x.npy", np.random.default_rng(4).standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32))
    options = ScanOptions(data=str(tmp_path / "x.npy"))
    with pytest.raises(UserError, match="inside an RNN node") as caught:
        patch_file(path, tmp_path / "out.onnx", options=options)
    assert "--ignore 'rnn'" in (caught.value.hint or "")
    assert not (tmp_path / "out.onnx").exists()
    outcome = patch_file(path, tmp_path / "out.onnx", options=options, mode="revive")
    assert [(left.name, "inside an RNN node" in left.reason) for left in outcome.plan.left_alone] == [("rnn", True)]
    assert not outcome.written
