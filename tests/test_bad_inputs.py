"""The bad-input catalogue: every hostile or broken input gets exit 2 (or the stated code) and a
one- or two-line message, no traceback, no output file, and the model file untouched."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@dataclass(frozen=True)
class Bad:
    id: str
    make: Callable[[Path], None]  # writes the files the case needs into a folder
    args: list[str]  # {dir} is that folder
    code: int
    message: str


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(content)


def _truncated(src: str, name: str, keep: float) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        data = (SAMPLES / src).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep)])

    return make


def _save_torch(name: str, obj_factory: Callable[[], object]) -> Callable[[Path], None]:
    return lambda d: torch.save(obj_factory(), d / name)


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda d: np.save(d / name, array)


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model refuses to run")


def _script(name: str, module: torch.nn.Module) -> Callable[[Path], None]:
    return lambda d: torch.jit.script(module).save(str(d / name))


def _nan_data(d: Path) -> None:
    x = np.load(SAMPLES / "sample_batch.npy")[:40].copy()
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 1, 1] = np.inf
    np.save(d / "nan.npy", x)


RNG_BYTES = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
MODEL = str(SAMPLES / "sample_cnn.pt")
DATA = ["--data", str(SAMPLES / "sample_batch.npy")]
NOTHING: Callable[[Path], None] = lambda d: None  # noqa: E731

CATALOGUE = [
    Bad("missing path", NOTHING, ["scan", "{dir}/nope.pt"], 2, "model file not found"),
    Bad("a directory", lambda d: (d / "m.pt").mkdir(), ["scan", "{dir}/m.pt"], 2, "is a folder"),
    Bad("empty file", _write("m.pt", b""), ["scan", "{dir}/m.pt"], 2, "is empty"),
    Bad("random bytes .pt", _write("m.pt", RNG_BYTES), ["scan", "{dir}/m.pt"], 2, "cannot tell the format"),
    Bad("random bytes .pt2", _write("m.pt2", RNG_BYTES), ["scan", "{dir}/m.pt2"], 2, "cannot tell the format"),
    Bad("truncated .pt2", _truncated("sample_cnn.pt2", "m.pt2", 0.5), ["scan", "{dir}/m.pt2"], 2,
        "damaged zip archive"),
    Bad("truncated TorchScript", _truncated("sample_cnn.pt", "m.pt", 0.7), ["scan", "{dir}/m.pt"], 2,
        "damaged zip archive"),
    Bad("state dict of another architecture", _save_torch("w.pt", lambda: torch.nn.Linear(3, 3).state_dict()),
        ["scan", "{dir}/w.pt", "--arch", "sample_models.train:build", *DATA], 2, "do not fit --arch"),
    Bad("checkpoint without a state dict", _save_torch("c.pt", lambda: {"epoch": 3, "lr": 0.1}),
        ["scan", "{dir}/c.pt", "--arch", "sample_models.train:build"], 2, "holds no state dict"),
    Bad("state dict without --arch", _save_torch("w.pt", lambda: torch.nn.Linear(3, 3).state_dict()),
        ["scan", "{dir}/w.pt"], 2, "--arch MODULE:CALLABLE"),
    Bad("pickled module without --trust-pickle", _save_torch("m.pt", lambda: torch.nn.ReLU()),
        ["scan", "{dir}/m.pt"], 2, "--trust-pickle"),
    Bad("data of the wrong shape", _npy("x.npy", np.zeros((4, 3, 7), np.float32)),
        ["scan", MODEL, "--data", "{dir}/x.npy"], 2, "the model failed on inputs of shape (4, 3, 7)"),
    Bad("data of the wrong dtype", _npy("x.npy", np.array(["a", "b"])),
        ["scan", MODEL, "--data", "{dir}/x.npy"], 2, "not a number"),
    Bad("empty .npy", _npy("x.npy", np.zeros((0, 3, 16, 16), np.float32)),
        ["scan", MODEL, "--data", "{dir}/x.npy"], 2, "holds no samples"),
    Bad("data file that is not an array", _write("x.npy", b"not numpy at all"),
        ["scan", MODEL, "--data", "{dir}/x.npy"], 2, "cannot read data file"),
    Bad("unknown data format", _write("x.csv", b"1,2,3"), ["scan", MODEL, "--data", "{dir}/x.csv"], 2,
        "unknown data format"),
    Bad("a model that raises in forward", _script("m.pt", Raises()), ["scan", "{dir}/m.pt", "--input-shape", "3"],
        2, "this model refuses to run"),
    Bad("--samples 0", NOTHING, ["scan", MODEL, *DATA, "--samples", "0"], 2, "--samples must be at least 1"),
    Bad("negative --batch-size", NOTHING, ["scan", MODEL, *DATA, "--batch-size", "-1"], 2,
        "--batch-size must be at least 1"),
    Bad("absurd --batch-size", NOTHING, ["scan", MODEL, "--input-shape", "3,16,16", "--batch-size", "10000000000"],
        2, "would need"),
    Bad("a batch beyond memory", NOTHING, ["scan", MODEL, "--input-shape", "3,20000,20000"], 2, "GiB"),
    Bad("unwritable -o", NOTHING, ["scan", MODEL, *DATA, "-o", "/proc/relu-doctor-report.json"], 2, "cannot write"),
    Bad("-o into a missing folder", NOTHING, ["scan", MODEL, *DATA, "-o", "{dir}/no/such/r.json"], 2,
        "does not exist"),
    Bad("-o equal to the model", lambda d: shutil.copy(MODEL, d / "m.pt"),
        ["scan", "{dir}/m.pt", *DATA, "-o", "{dir}/m.pt"], 2, "refusing to overwrite the input"),
    Bad("an empty shard", NOTHING, ["scan", MODEL, *DATA, "--shard", "0/1000"], 2, "is empty"),
    Bad("a bad --shard", NOTHING, ["scan", MODEL, *DATA, "--shard", "3/3"], 2, "must be in 0..N-1"),
    Bad("a report that is JSON but not an object", _write("r.json", b"[1]"),
        ["diff", "{dir}/r.json", "{dir}/r.json"], 2, "is not a relu-doctor report"),
    Bad("a report that is not JSON", _write("r.json", b"\x00garbage"),
        ["merge", "{dir}/r.json", MODEL, "-o", "{dir}/out.json"], 2, "is not a relu-doctor report"),
    Bad("unknown flag", NOTHING, ["scan", MODEL, "--frobnicate"], 2, "No such option"),
    Bad("a malformed --arch-kwargs", _save_torch("w.pt", lambda: torch.nn.Linear(3, 3).state_dict()),
        ["scan", "{dir}/w.pt", "--arch", "sample_models.train:build", "--arch-kwargs", "[oops"], 2, "not JSON"),
]


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("bad", CATALOGUE, ids=lambda b: b.id)
def test_bad_input(bad: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLES.parent)  # --arch sample_models.train:build imports from the repo root
    bad.make(tmp_path)
    before = _sha(tmp_path)
    sample_before = _sha(SAMPLES)
    result = CliRunner().invoke(app, [a.format(dir=tmp_path) for a in bad.args])
    assert result.exit_code == bad.code, result.output
    assert bad.message in result.stderr
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, lines
    assert result.stdout == ""
    assert _sha(tmp_path) == before  # nothing written, nothing changed, no temporary left
    assert _sha(SAMPLES) == sample_before


def test_nan_and_inf_in_the_data_are_reported_not_fatal(tmp_path: Path) -> None:
    _nan_data(tmp_path)
    result = CliRunner().invoke(app, ["scan", MODEL, "--data", str(tmp_path / "nan.npy"), "-f", "json"])
    assert result.exit_code == 0
    assert "2 NaN or infinite values" in result.stderr
    import json

    report = json.loads(result.stdout)
    assert report["sites"][0]["nonfinite"] > 0


def test_a_model_without_relus_gives_an_empty_report_that_says_so(tmp_path: Path) -> None:
    _script("m.pt", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh()))(tmp_path)
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "m.pt"), "--input-shape", "3,8,8", "--samples", "4"])
    assert result.exit_code == 0
    assert "No ReLU-family activation ran in this model" in result.stdout
    js = CliRunner().invoke(app, ["scan", str(tmp_path / "m.pt"), "--input-shape", "3,8,8", "-f", "json"])
    assert '"sites": []' in js.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = CliRunner().invoke(app, ["scan", MODEL, *DATA, "-o", str(locked / "r.json")])
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_a_gated_diff_of_reports_with_no_common_site_is_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    for name, model in (("pt.json", MODEL), ("onnx.json", str(SAMPLES / "sample_cnn.onnx"))):
        result = runner.invoke(app, ["scan", model, *DATA, "--samples", "32", "-f", "json", "-q",
                                     "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["diff", str(tmp_path / "pt.json"), str(tmp_path / "onnx.json"),
                                 "--fail-increase", "1"])
    assert result.exit_code == 2
    assert "would compare nothing" in result.stderr
