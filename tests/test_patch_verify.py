"""Patch verification rides on the scans (patching/verify_pass.py): the original's outputs
and timings come from its scan, the checks and the patched outputs from the rescan of the
written file. These tests hold what it reports against answers computed here with plain
torch / onnxruntime on the written file, whichever way the outputs reached the comparison
(recorded by the scan, by a scan of the original for --report / --to onnx, or by running
both models again when the outputs are too large to keep), and make sure a written model
that breaks a live neuron is caught by the rescan-fed checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

import relu_doctor as rd
from relu_doctor.errors import VerificationError
from relu_doctor.patching import ScanOptions, patch_file, plan, verify_pass
from relu_doctor.render.patch import print_outcome
from tests.models import case, run_saved, sample_data, save_model

SAMPLES = 40  # a batch of 32 and a padded-out one of 8: both count in max |change|


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":  # an export of a module names its input after forward's argument
        import onnxruntime as ort

        session = ort.InferenceSession(str(path))
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    return run_saved(path, x)


def _expected_change(original: Path, written: Path, data: np.ndarray) -> float:
    """max |change| over the sample, computed here in the scan's batches of 32."""
    worst = 0.0
    for start in range(0, len(data), 32):
        x = data[start:start + 32]
        a, b = _run(original, x).astype(np.float64), _run(written, x).astype(np.float64)
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path, np.ndarray]:
    c = case("functional")
    folder = tmp_path_factory.mktemp("verify")
    data = sample_data(c, n=SAMPLES, seed=5)
    np.save(folder / "data.npy", data)
    paths = {fmt: save_model(c.build(), c.input_shape, fmt, folder / f"m.{fmt}") for fmt in ("pt", "pt2", "onnx")}
    return paths, folder / "data.npy", data


@pytest.mark.parametrize(("fmt", "how"), [("pt2", "recorded"), ("pt", "report"), ("pt", "too-large"),
                                          ("onnx", "recorded"), ("onnx", "too-large"), ("pt-to-onnx", "recorded"),
                                          ("pt-to-onnx", "report"), ("pt-to-onnx", "too-large")])
def test_max_change_and_timings_match_an_answer_computed_here(fmt: str, how: str, files: tuple, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    paths, data_path, data = files
    source = paths["pt" if fmt == "pt-to-onnx" else fmt]
    out = tmp_path / f"out.{'onnx' if fmt.endswith('onnx') else fmt}"
    opts = ScanOptions(data=str(data_path), trust_pickle=True)
    report_path = None
    if how == "report":
        report_path = tmp_path / "r.json"
        report_path.write_text(rd.scan(str(source), data=str(data_path), trust_pickle=True).to_json())
    if how == "too-large":  # nothing kept from the scans: the comparison runs both models again
        monkeypatch.setattr(verify_pass, "RECORD_LIMIT_BYTES", 0)
    outcome = patch_file(source, out, options=opts, report_path=report_path, slope=0.3)
    v = outcome.verification
    assert v is not None and v.ok, v.all_problems() if v else None
    assert v.samples == SAMPLES and v.fresh == 32
    want = _expected_change(source, out, data)
    assert want > 0  # the planted dead channels leak now: the outputs move
    assert v.max_abs_change == pytest.approx(want, rel=1e-5)
    assert v.timed_batch == 32 and v.seconds_original > 0 and v.seconds_patched > 0
    assert sum(c.live_entries for c in v.checks) > 0 and v.leaking == v.negative_inputs > 0
    # an eager model written as ONNX is compared with itself in torch, and the summary says so
    cross = fmt == "pt-to-onnx"
    assert (v.original_runtime, v.patched_runtime) == (("torch", "onnxruntime") if cross else (None, None))
    console = Console(record=True, width=200)
    print_outcome(outcome, console)
    assert ("original in torch" in console.export_text()) == cross


def test_revive_to_onnx_compares_with_the_original_exported_to_onnx(tmp_path: Path) -> None:
    """Revive promises bit-identical outputs, which torch against onnxruntime cannot show."""
    c = case("mlp")
    src = save_model(c.build(), c.input_shape, "pt", tmp_path / "m.pt")
    outcome = patch_file(src, tmp_path / "out.onnx",
                         options=ScanOptions(input_shape=c.input_shape, samples=64, trust_pickle=True), mode="revive")
    v = outcome.verification
    assert outcome.written and v is not None and v.ok
    assert v.max_abs_change == 0 and v.original_runtime is None


@pytest.mark.parametrize("fmt", ["pt", "onnx"])
def test_a_written_model_that_changes_a_live_neuron_fails_verification(fmt: str, files: tuple, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    paths, data_path, _ = files
    real = plan.SitePatch.slopes

    def wrong(self: plan.SitePatch) -> np.ndarray:  # what gets written leaks a live neuron too
        w = real(self)
        w[next(i for i in range(self.neurons) if i not in self.dead)] = 0.5
        return w

    monkeypatch.setattr(plan.SitePatch, "slopes", wrong)
    out = tmp_path / f"out.{fmt}"
    with pytest.raises(VerificationError, match="live-neuron outputs changed value"):
        patch_file(paths[fmt], out, options=ScanOptions(data=str(data_path), trust_pickle=True))
    assert not out.exists()


def test_the_recorder_keeps_outputs_up_to_its_limit() -> None:
    rec = verify_pass.OutputRecorder(limit=100)
    rec.finish_batch([np.zeros((4, 5), np.float32)], 3, 4, 0.5)  # 3 valid rows: 60 bytes kept
    assert rec.complete and rec.outputs[0][0].shape == (3, 5) and rec.runs == [(4, 0.5)]
    rec.finish_batch([torch.zeros(4, 5).numpy()], 4, 4, 0.25)  # 80 more: over the limit, all dropped
    assert not rec.complete and rec.outputs == [] and len(rec.runs) == 2


def test_best_seconds_leaves_out_the_warm_up_and_other_batch_sizes() -> None:
    assert verify_pass.best_seconds([(32, 3.0), (32, 1.5), (32, 1.2), (8, 0.1)]) == (1.2, 32)
    assert verify_pass.best_seconds([(32, 3.0), (8, 0.1)]) == (3.0, 32)  # one batch of its size: the warm-up
    assert verify_pass.best_seconds([]) == (0.0, 0)
