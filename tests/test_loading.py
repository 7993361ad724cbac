"""Loading every PyTorch format, safely; and what the user is told when it goes wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from relu_doctor.errors import UserError
from relu_doctor.loading import detect_format
from tests.models import case, sample_data

MLP = case("mlp")


@pytest.fixture()
def data() -> np.ndarray:
    return sample_data(MLP, n=32)


def planted(report: rd.Report) -> list[list[int]]:
    return [s.dead_indices for s in report.sites]


EXPECTED = [list(s.dead) for s in MLP.sites]


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 1},
    lambda sd: {"model_state_dict": sd, "optimizer": {}},
    lambda sd: {"model": sd},
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},  # Lightning
    lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DistributedDataParallel
], ids=["plain", "checkpoint", "model_state_dict", "model", "lightning", "ddp"])
def test_state_dicts_in_their_usual_wrappers(tmp_path: Path, data: np.ndarray, wrap) -> None:  # noqa: ANN001
    path = tmp_path / "w.pt"
    torch.save(wrap(MLP.build().state_dict()), path)
    assert planted(rd.scan(path, data, arch=MLP.factory)) == EXPECTED


def test_arch_kwargs_and_current_directory_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def build(width=4):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.ReLU())\n")
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU()).state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    report = rd.scan("w.pt", arch="mymodels:build", arch_kwargs='{"width": 6}', input_shape=(3,), samples=8)
    assert report.sites[0].neurons == 6


def test_state_dict_without_arch_says_to_pass_one(tmp_path: Path) -> None:
    torch.save(MLP.build().state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="holds weights only") as e:
        rd.scan(tmp_path / "w.pt")
    assert "--arch" in str(e.value.hint)


def test_weights_of_another_architecture_list_the_keys(tmp_path: Path) -> None:
    torch.save(case("conv1d").build().state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"do not fit --arch tests.models:build_mlp: keys missing \d+ \(") as e:
        rd.scan(tmp_path / "w.pt", arch=MLP.factory, input_shape=(12,))
    assert "unexpected" in str(e.value)


def test_weights_of_the_wrong_size_are_a_user_error(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "arch5.py").write_text(
        "import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU())\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UserError, match="size mismatch"):
            rd.scan(tmp_path / "w.pt", arch="arch5:build", input_shape=(3,))
    finally:
        sys.path.remove(str(tmp_path))


def test_bad_arch_specs(tmp_path: Path) -> None:
    torch.save(MLP.build().state_dict(), tmp_path / "w.pt")
    for arch, message in [("nocolon", "is not MODULE:CALLABLE"), ("no_such_module_x:build", "cannot import"),
                          ("tests.models:no_such_factory", "cannot import"),
                          ("numpy:ones", "failed when called with no arguments")]:
        with pytest.raises(UserError, match=message):
            rd.scan(tmp_path / "w.pt", arch=arch, input_shape=(12,))


def test_pickled_module_needs_trust_and_never_runs_code_without_it(tmp_path: Path, data: np.ndarray) -> None:
    path = tmp_path / "m.pt"
    torch.save(MLP.build(), path)
    with pytest.raises(UserError, match="pickled Python objects") as e:
        rd.scan(path, data)
    assert "--trust-pickle" in str(e.value.hint)
    assert planted(rd.scan(path, data, trust_pickle=True)) == EXPECTED


class _Payload:
    """Unpickling this calls Path.touch on a marker: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_malicious_pickle_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, path)
    with pytest.raises(UserError, match="pickled Python objects"):
        rd.scan(path, arch=MLP.factory, input_shape=(12,))
    assert not marker.exists()


def test_format_is_detected_from_content_not_extension(tmp_path: Path) -> None:
    model = MLP.build()
    torch.jit.script(model).save(str(tmp_path / "script.onnx"))  # a lying extension
    assert detect_format(tmp_path / "script.onnx") == "torchscript"
    ep = torch.export.export(model, (torch.randn(2, 12),))
    torch.export.save(ep, tmp_path / "prog.bin")
    assert detect_format(tmp_path / "prog.bin") == "pt2"
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "weights.pt")
    assert detect_format(tmp_path / "weights.pt") == "safetensors"


def test_api_accepts_in_memory_models_and_restores_training_mode(data: np.ndarray) -> None:
    model = MLP.build().train()
    report = rd.scan(model, data)
    assert planted(report) == EXPECTED
    assert model.training and all(m.training for m in model.modules())
    assert report.model["format"] == "module"
    assert planted(rd.scan(torch.jit.script(MLP.build()), data)) == EXPECTED
    assert planted(rd.scan(torch.export.export(MLP.build(), (torch.randn(2, 12),)), data)) == EXPECTED


def test_user_code_failures_are_user_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_syntax.py").write_text("def build(:\n")
    (tmp_path / "raising.py").write_text("def build():\n    raise ValueError('no such variant')\n")
    torch.save(MLP.build().state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cannot import --arch broken_syntax:build: SyntaxError"):
        rd.scan("w.pt", arch="broken_syntax:build", input_shape=(12,))
    with pytest.raises(UserError, match="failed when called with no arguments: ValueError: no such variant"):
        rd.scan("w.pt", arch="raising:build", input_shape=(12,))


def test_trusted_pickle_finds_classes_in_the_current_directory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mynet.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(3, 4)\n"
        "    def forward(self, x):\n"
        "        return torch.relu(self.lin(x))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynet  # type: ignore[import-not-found]

    torch.save(mynet.Net(), tmp_path / "net.pt")
    monkeypatch.delitem(__import__("sys").modules, "mynet")
    import sys

    sys.path.remove(str(tmp_path))
    report = rd.scan("net.pt", trust_pickle=True, input_shape=(3,), samples=4)
    assert [s.name for s in report.sites] == ["/relu"]
    (tmp_path / "mynet.py").unlink()
    __import__("sys").modules.pop("mynet", None)
    with pytest.raises(UserError, match="cannot be imported here"):
        rd.scan("net.pt", trust_pickle=True, input_shape=(3,), samples=4)


def test_a_model_that_is_one_activation_is_named_alike_in_every_format() -> None:
    x = torch.randn(4, 3)
    names = [[s.name for s in rd.scan(m, x.numpy()).sites]
             for m in (torch.nn.ReLU(), torch.jit.script(torch.nn.ReLU()), torch.export.export(torch.nn.ReLU(), (x,)))]
    assert names == [["/relu"]] * 3
