"""What an ONNX scan holds beside onnxruntime's session: no second copy of the weights for
shape inference, no model bytes kept by the session, no partials pinning onnxruntime's arena."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from relu_doctor.backends import onnx as onnx_backend
from relu_doctor.backends import onnx_counters
from relu_doctor.backends.onnx_instrument import _without_weights, make_session, static_shapes
from relu_doctor.inputs import InputSpec, Sample
from tests.test_onnx_instrument import data, two_convs

CPU = ["CPUExecutionProvider"]


def test_the_shape_skeleton_drops_large_weights_only() -> None:
    m = two_convs(channels=32)  # w2: 32 x 32 x 3 x 3 floats, 36 KiB; w1 3.4 KiB, lo and hi 4 bytes
    before = m.SerializeToString()
    reference = onnx.ModelProto()  # what shape inference needs, built the obvious way
    reference.CopyFrom(m)
    for init in reference.graph.initializer:
        if init.name == "w2":
            init.ClearField("raw_data")
    skeleton = _without_weights(m)
    assert skeleton == reference
    assert m.SerializeToString() == before  # the model itself is untouched
    w2 = next(t for t in skeleton.graph.initializer if t.name == "w2")
    assert list(w2.dims) == [32, 32, 3, 3] and w2.data_type == onnx.TensorProto.FLOAT
    assert static_shapes(m, {"x": [5, 3, 8, 8]})["y"] == (onnx.TensorProto.FLOAT, [5, 32, 8, 8])


def test_a_cpu_session_does_not_keep_the_model_bytes() -> None:
    m = two_convs()
    session = make_session(m, CPU, threads=1)
    # onnxruntime's Python session keeps the bytes it was made from (as large as the
    # weights) to rebuild itself on a fallback provider; with the CPU alone it cannot use them
    assert getattr(session, "_model_bytes", None) is None
    x = data()
    plain = ort.InferenceSession(m.SerializeToString(), providers=CPU)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], plain.run(None, {"x": x})[0])


def test_capture_hands_the_accumulators_arrays_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's outputs are views of its arena: kept into the next run, they pin its
    chunks and the arena grows (a ResNet-18 scan: +100 MiB). The capture copies them."""
    seen: list[bool] = []
    add = onnx_counters.SiteAccumulator.add

    def recording(self: onnx_counters.SiteAccumulator, outputs: dict, *args: object) -> bool:
        seen.extend(bool(y.flags.owndata) for y in outputs.values())
        return add(self, outputs, *args)

    monkeypatch.setattr(onnx_counters.SiteAccumulator, "add", recording)
    model = onnx_backend.prepare(two_convs(), CPU)
    x = data(12)
    sample = Sample(source="array", specs=[InputSpec("x", (3, 8, 8))], count=len(x), arrays=[x])
    result = onnx_backend.capture(model, sample, batch_size=4)
    assert seen and all(seen)
    # the counts are the copies' counts: the Clip site's output is the model's output y
    (y,) = ort.InferenceSession(two_convs().SerializeToString(), providers=CPU).run(None, {"x": x})
    np.testing.assert_array_equal(result.sites[1].counters.fires, (y > 0).sum((0, 2, 3)))
    assert result.sites[0].counters.fires[3] == 0  # planted dead
