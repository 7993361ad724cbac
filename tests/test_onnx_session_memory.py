"""What an ONNX scan holds beside onnxruntime's session: no second copy of the weights for
shape inference, no model bytes kept by the session, no partials pinning onnxruntime's arena."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import relu_doctor as rd
from relu_doctor.backends import onnx as onnx_backend
from relu_doctor.backends import onnx_counters
from relu_doctor.backends.onnx_session import make_session
from relu_doctor.backends.onnx_shapes import static_shapes, without_weights
from relu_doctor.inputs import InputSpec, Sample
from tests.test_onnx_instrument import data, two_convs

CPU = ["CPUExecutionProvider"]


def saved(path: Path, channels: int = 16) -> onnx.ModelProto:
    """two_convs with its output's shape spelt out, as onnx.checker wants it in a file."""
    m = two_convs(channels)
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 8, 8]))
    onnx.save(m, str(path))
    return m


def test_the_shape_skeleton_drops_large_weights_only() -> None:
    m = two_convs(channels=32)  # w2: 32 x 32 x 3 x 3 floats, 36 KiB; w1 3.4 KiB, lo and hi 4 bytes
    before = m.SerializeToString()
    reference = onnx.ModelProto()  # what shape inference needs, built the obvious way
    reference.CopyFrom(m)
    for init in reference.graph.initializer:
        if init.name == "w2":
            init.ClearField("raw_data")
    skeleton = without_weights(m)
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


def test_a_scan_of_a_file_lets_the_weights_go_and_reads_them_back(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once onnxruntime has its own copy, a scan of a path drops the proto's weights; the exact
    re-run of a batch with non-finite values and --prove read them back from the file."""
    path = tmp_path / "m.onnx"
    m = saved(path)
    before = m.SerializeToString()
    x = data(12)
    x[2, 0, 1, 1], x[9, 1, 2, 2] = np.nan, np.inf  # non-finite partials: batches 1 and 3 run again, raw
    weightless: list[int] = []
    drop = onnx_backend.OnnxModel.drop_weights

    def recording(self: onnx_backend.OnnxModel) -> None:
        drop(self)
        weightless.append(self.proto.ByteSize() if self.weightless else -1)

    monkeypatch.setattr(onnx_backend.OnnxModel, "drop_weights", recording)
    by_path = rd.scan(str(path), data=x, batch_size=4, prove=True, warn=False)
    in_memory = rd.scan(m, data=x, batch_size=4, prove=True, warn=False)
    assert weightless[0] > 0 and weightless[0] < len(before) - 16 * 16 * 9 * 4  # w2 (9 KiB) was let go
    assert weightless[1] == -1  # a proto the caller passed in is never touched
    assert m.SerializeToString() == before
    assert by_path.sites[0].proof is not None and 3 in by_path.sites[0].proof.indices  # planted: w1[3] = 0
    assert any(s.nonfinite for s in by_path.sites)
    assert [s.to_dict() for s in by_path.sites] == [s.to_dict() for s in in_memory.sites]


def test_a_file_changed_during_the_scan_is_not_read_back(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.onnx"
    saved(path)
    capture = onnx_backend.capture

    def then_rewrite(*args: object, **kwargs: object) -> object:
        result = capture(*args, **kwargs)  # type: ignore[arg-type]
        saved(path, channels=8)
        return result

    monkeypatch.setattr(onnx_backend, "capture", then_rewrite)
    with pytest.raises(rd.UserError, match="changed while relu-doctor was scanning it"):
        rd.scan(str(path), data=data(), batch_size=4, prove=True, warn=False)


def test_a_model_with_external_data_keeps_its_weights(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sha256 taken at load covers the model file, not its external data: such weights
    could not be read back with the same check, so they stay in memory."""
    m = saved(tmp_path / "inline.onnx")
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="m.bin", size_threshold=1024)
    states: list[bool] = []
    drop = onnx_backend.OnnxModel.drop_weights

    def recording(self: onnx_backend.OnnxModel) -> None:
        drop(self)
        states.append(self.weightless)

    monkeypatch.setattr(onnx_backend.OnnxModel, "drop_weights", recording)
    x = data(8)
    external = rd.scan(str(path), data=x, batch_size=4, prove=True, warn=False)
    inline = rd.scan(str(tmp_path / "inline.onnx"), data=x, batch_size=4, prove=True, warn=False)
    assert states == [False, True]
    assert [s.to_dict() for s in external.sites] == [s.to_dict() for s in inline.sites]
