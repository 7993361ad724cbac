"""`patch --mode revive`: dead neurons leak, the weights that read them are zeroed (SPEC 14).

Known answers: the catalogue's planted neurons are dead on every input, so the revived
model must give the original's outputs bit for bit on any fresh input; the weights that
read them must be zero in the written file; a site whose neurons reach the model's
output cannot be cut off and is left alone with that reason. And the point of it: a
few training steps make the revived neurons fire, while in the original they stay dead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import relu_doctor as rd
from relu_doctor.loading import load_model
from relu_doctor.patching import ScanOptions, patch_file
from tests.models import case, run_saved, save_model

OUTPUT_REASON = "they reach the model's output"


def _save(name: str, fmt: str, folder: Path) -> Path:
    c = case(name)
    return save_model(c.build(), c.input_shape, fmt, folder / f"{name}.{fmt}")


def _outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    return run_saved(path, x.numpy())


def _weights(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".onnx":
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    obj = load_model(path, trust_pickle=True).obj
    state = obj.state_dict if isinstance(obj, torch.export.ExportedProgram) else obj.state_dict()
    return {k: v.detach().numpy() for k, v in state.items()}


@pytest.mark.parametrize(("name", "fmt"), [
    ("mlp", "pt"), pytest.param("mlp", "pt2", marks=pytest.mark.slow), ("mlp", "onnx"), ("reused_relu", "onnx"),
    pytest.param("reused_relu", "pt", marks=pytest.mark.slow),
    pytest.param("reused_relu", "pt2", marks=pytest.mark.slow),
])
def test_revive_keeps_outputs_bit_identical(name: str, fmt: str, tmp_path: Path) -> None:
    c = case(name)
    src = _save(name, fmt, tmp_path)
    out = tmp_path / f"out.{fmt}"
    outcome = patch_file(src, out, options=ScanOptions(input_shape=c.input_shape, samples=64, trust_pickle=True),
                         mode="revive")
    assert outcome.written and outcome.plan.mode == "revive"
    x = torch.randn(200, *c.input_shape) * 4  # fresh inputs, wider than the sample
    before, after = _outputs(src, x), _outputs(out, x)
    assert before.tobytes() == after.tobytes()
    # every site but a last one that feeds the output was revived; its consumer's inputs are zero now
    last_is_output = name == "mlp"
    revived = c.sites[:-1] if last_is_output else c.sites
    assert [len(p.dead) for p in outcome.plan.sites] == [len(s.dead) for s in revived]
    if last_is_output:
        assert [(len(a.name) > 0, a.neurons, a.reason) for a in outcome.plan.left_alone] == [
            (True, len(c.sites[-1].dead), OUTPUT_REASON)]
    weights = _weights(out)
    assert len(outcome.plan.zeroed) == len(revived)
    for p, site in zip(outcome.plan.sites, revived):
        (param,) = outcome.plan.zeroed[p.name]  # one Conv / Linear reads each site here
        w = weights[param]  # (out, in, ...) for Conv, Linear and ONNX Gemm(transB=1) alike
        assert not w[:, list(site.dead)].any(), param
        live = [i for i in range(site.neurons) if i not in site.dead]
        assert np.abs(w[:, live]).min() > 0 or w[:, live].any()  # only the dead neurons' inputs were cut
    # the leak is in the file: a rescan sees leaky sites where the dead neurons were
    rescan = rd.scan(str(out), input_shape=c.input_shape, samples=8, trust_pickle=True)
    assert [s.kind for s in rescan.sites][: len(revived)] == ["prelu"] * len(revived)


def test_training_steps_make_revived_neurons_fire() -> None:
    c = case("mlp")
    report = rd.scan(c.build(), input_shape=c.input_shape, samples=64)
    dead = report.sites[0].dead_indices
    assert dead == [2, 11]

    def train(model: torch.nn.Module) -> list[int]:
        torch.manual_seed(0)
        teacher = torch.nn.Linear(12, 10)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        model.train()
        for _ in range(25):
            x = torch.randn(64, 12)
            loss = torch.nn.functional.mse_loss(model(x), teacher(x).detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        return rd.scan(model, input_shape=c.input_shape, samples=256).sites[0].dead_indices

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        revived = rd.patch(c.build(), report, mode="revive", slope=0.2)
    still_dead = train(revived)
    assert not set(dead) & set(still_dead)  # both revived neurons fire now
    assert set(dead) <= set(train(c.build()))  # unpatched, they get no gradient and stay dead


def test_api_revive_onnx_and_left_alone_warning(tmp_path: Path) -> None:
    c = case("mlp")
    proto = onnx.load(str(_save("mlp", "onnx", tmp_path)))
    report = rd.scan(proto, input_shape=c.input_shape, samples=32)
    with pytest.warns(UserWarning, match="revive left site /relu2/Relu alone"):
        patched = rd.patch(proto, report, mode="revive")
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    import onnxruntime as ort

    a = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": x})[0]
    b = ort.InferenceSession(patched.SerializeToString()).run(None, {"input": x})[0]
    assert a.tobytes() == b.tobytes()


def test_residual_add_is_left_alone() -> None:
    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 6)
            self.fc2 = torch.nn.Linear(6, 6)
            with torch.no_grad():
                self.fc1.weight[1] = 0
                self.fc1.bias[1] = -1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            return self.fc2(h) + h

    model = Residual().eval()
    report = rd.scan(model, input_shape=(6,), samples=32)
    assert report.sites[0].dead_indices == [1]
    with pytest.warns(UserWarning, match="add reads them"):
        patched = rd.patch(model, report, mode="revive")
    assert patched is model or isinstance(patched, torch.nn.Module)


def test_cli_patch_mode_revive(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from relu_doctor.cli import app

    src = _save("mlp", "onnx", tmp_path)
    out = tmp_path / "r.onnx"
    result = CliRunner().invoke(app, ["patch", str(src), "--input-shape", "12", "--mode", "revive", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Left alone: /relu2/Relu (1 dead neurons): {OUTPUT_REASON}." in result.stdout
    assert "Revive: the dead neurons' inputs to fc2.weight are zero" in result.stdout
    assert "max |change| of the model outputs on the sample: 0" in result.stdout
    assert out.exists()
