"""Hostile files: archives that would run code, expand beyond memory, or read outside their
folder. Every case ends in exit 2 with one or two lines, no traceback, nothing written or
changed, and (for code) no marker file: nothing from the file ran."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app

from . import hostile

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path, Path], list[str]]  # (folder, marker) -> CLI arguments after the command
    message: str


def _pt2(edit: Callable[[Path], hostile.Edit]) -> Callable[[Path, Path], list[str]]:
    def make(d: Path, marker: Path) -> list[str]:
        hostile.rewrite_pt2(hostile.clean_pt2(d / "clean.pt2"), d / "m.pt2", edit(marker))
        (d / "clean.pt2").unlink()
        return [str(d / "m.pt2")]
    return make


def _bomb(d: Path, marker: Path) -> list[str]:
    hostile.declared_bomb(hostile.clean_pt2(d / "clean.pt2"), d / "m.pt2")
    (d / "clean.pt2").unlink()
    return [str(d / "m.pt2")]


CODE_IN_PT2 = [
    Case("pt2 pickled weight", _pt2(hostile.pickled_weight), "use_pickle"),
    Case("pt2 pickled constant", _pt2(hostile.pickled_constant), "use_pickle"),
    Case("pt2 opaque object constant", _pt2(hostile.opaque_constant), "pickled"),
    Case("pt2 example inputs retried with weights_only=False", _pt2(hostile.pickled_sample_inputs),
         "pickled Python objects"),
    Case("pt2 shape expression sympy would eval", _pt2(hostile.eval_in_shape_expression), "not arithmetic"),
    Case("pt2 AOTInductor shared library", _pt2(hostile.aoti_code), "AOTInductor"),
]
def _torchscript_bomb(d: Path, marker: Path) -> list[str]:
    hostile.declared_bomb(SAMPLES / "sample_cnn.pt", d / "m.pt")
    return [str(d / "m.pt")]


def _npz_bomb(d: Path, marker: Path) -> list[str]:
    import numpy as np

    np.savez(d / "x.npz", input=np.zeros((4, 3, 16, 16), np.float32))
    hostile.declared_bomb(d / "x.npz", d / "bomb.npz")
    (d / "x.npz").unlink()
    return [str(SAMPLES / "sample_cnn.onnx"), "--data", str(d / "bomb.npz")]


MEMORY = [
    Case("pt2 zip member declaring 3 GiB", _bomb, "would need 3.0 GiB"),
    Case("TorchScript zip member declaring 3 GiB", _torchscript_bomb, "would need 3.0 GiB"),
    Case(".npz data member declaring 3 GiB", _npz_bomb, "would need 3.0 GiB"),
    Case("pt2 empty record declaring 2**31 elements", _pt2(hostile.zero_record_bomb), "would need 16.0 GiB"),
]


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def check_refused(result: object, message: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert message in result.stderr, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["scan", "patch"])
@pytest.mark.parametrize("case", CODE_IN_PT2 + MEMORY, ids=lambda c: c.id)
def test_hostile_archive_is_refused_and_runs_nothing(case: Case, command: str, tmp_path: Path) -> None:
    marker = tmp_path.parent / f"{tmp_path.name}.marker"  # outside the folder compared below
    args = case.make(tmp_path, marker)
    extra = ["-o", str(tmp_path / f"out{Path(args[0]).suffix}")] if command == "patch" else []  # OUT as MODEL
    before = _sha(tmp_path)
    result = CliRunner().invoke(app, [command, *args, "--samples", "4", *extra])
    check_refused(result, case.message)
    assert not marker.exists(), "code from the archive ran"
    assert _sha(tmp_path) == before


def test_the_crafted_archive_really_runs_code_when_trusted(tmp_path: Path) -> None:
    """The oracle for the cases above: with --trust-pickle (torch's own loading) the same
    archive does create the marker, so its absence above means the guard stopped it."""
    marker = tmp_path / "ran.marker"
    args = _pt2(hostile.pickled_weight)(tmp_path, marker)
    result = CliRunner().invoke(app, ["scan", *args, "--samples", "4", "--trust-pickle", "-f", "json"])
    assert marker.exists()
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CODE_IN_PT2[:4], ids=lambda c: c.id)
def test_the_loader_guard_alone_stops_every_unpickle(case: Case, tmp_path: Path) -> None:
    """Second layer: torch.export.load under the guard, without the archive inspection, runs
    no pickle either (the guard does not depend on knowing where torch unpickles)."""
    import torch

    from relu_doctor.backends.pt2_loading import _guarded_loader
    from relu_doctor.errors import UserError

    marker = tmp_path / "ran.marker"
    (path,) = case.make(tmp_path, marker)
    with pytest.raises(UserError, match="pickled"), _guarded_loader(True):
        torch.export.load(path)
    assert not marker.exists()
    assert torch.load.__name__ == "load"  # the patch is scoped: torch is itself again


def test_a_clean_pt2_still_loads_and_the_limit_can_be_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = hostile.clean_pt2(tmp_path / "clean.pt2")
    assert CliRunner().invoke(app, ["scan", str(clean), "--samples", "4", "-q"]).exit_code == 0
    hostile.rewrite_pt2(clean, tmp_path / "zeros.pt2", hostile.zero_record_bomb(tmp_path))
    monkeypatch.setenv("RELU_DOCTOR_MAX_LOAD_BYTES", "1K")
    check_refused(CliRunner().invoke(app, ["scan", str(clean), "--samples", "4"]), "above the limit of 1.0 KiB")


# ONNX external data: every place a tensor can hide, every bad location

def _onnx_model(d: Path, where: str, location: str, write_data: bool) -> Path:
    import onnx

    model = hostile.onnx_with_hidden_tensors()
    (d / "model").mkdir(exist_ok=True)
    hostile.external(hostile.hidden_tensor(model, where), location, d / "model" if write_data else None)
    path = d / "model" / "m.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("where", hostile.HIDING_PLACES)
def test_external_data_in_every_kind_of_tensor_is_read_from_beside_the_model(where: str, tmp_path: Path) -> None:
    import numpy as np

    import relu_doctor as rd

    path = _onnx_model(tmp_path, where, "weights.bin", write_data=True)
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    assert rd.scan(path, data=x).sites[0].dead_indices == [1]  # x[1] - 5 - 1 never fires


@pytest.mark.parametrize("where", hostile.HIDING_PLACES)
@pytest.mark.parametrize("location, message", [
    ("../secret.bin", "outside the model's folder"),
    ("secret.bin", "is missing"),  # not beside the model, but in the current directory
    ("/etc/hostname", "outside the model's folder"),
    ("weights\0.bin", "NUL bytes"),
    ("a" * 10000, "not a file name"),
], ids=["parent", "current directory", "absolute", "NUL", "10000 chars"])
def test_external_data_that_leaves_the_folder_is_refused(where: str, location: str, message: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret.bin").write_bytes(bytes(16))  # what a hostile location wants read
    monkeypatch.chdir(tmp_path)  # onnxruntime resolved locations against the current directory
    path = _onnx_model(tmp_path, where, location, write_data=False)
    before = _sha(tmp_path / "model")
    result = CliRunner().invoke(app, ["scan", str(path), "--samples", "4"])
    check_refused(result, message)
    assert _sha(tmp_path / "model") == before


def test_an_in_memory_model_with_external_references_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import relu_doctor as rd

    model = hostile.onnx_with_hidden_tensors()
    hostile.external(hostile.hidden_tensor(model, "sparse initializer"), "secret.bin", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(rd.UserError, match="points to external data"):
        rd.scan(model, input_shape="4", samples=4)
