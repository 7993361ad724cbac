"""`relu-doctor patch` on the command line: exit codes, refusals, and no partial file, ever."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.models import case, sample_data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, all_formats: Callable[[str], dict[str, Path]]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("reused_relu", "leaky"):
        paths.update({f"{name}.{fmt}": p for fmt, p in all_formats(name).items()})
        np.save(folder / f"{name}.npy", sample_data(case(name), n=32, seed=2))
        paths[f"{name}.data"] = folder / f"{name}.npy"
    return paths


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def run(*args: str | Path) -> object:
    return CliRunner().invoke(app, ["patch", *map(str, args)])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "state_dict"])
def test_patch_writes_a_verified_model_and_says_what_it_did(models: dict, out_dir: Path, fmt: str) -> None:
    model = models[f"reused_relu.{fmt}"]
    before = sha256(model)
    out = out_dir / f"patched.{model.suffix.lstrip('.')}"
    extra = ["--arch", case("reused_relu").factory] if fmt == "state_dict" else []
    result = run(model, "--data", models["reused_relu.data"], "-o", out, *extra)
    assert result.exit_code == 0, result.output
    assert out.is_file() and leftovers(out_dir) == [out.name]
    assert sha256(model) == before
    text = result.stdout
    assert "3 site(s), 7 neuron(s) made leaky" in text
    assert "live neurons unchanged, bit for bit" in text
    assert "no grad-blocked dead neuron left" in text
    assert "inference per batch of 32" in text and "max |change|" in text
    assert ("Cost: a per-channel PRelu" in text) == (fmt == "onnx")


def test_an_existing_out_is_refused_unless_forced(models: dict, out_dir: Path) -> None:
    model, out = models["reused_relu.onnx"], out_dir / "m.onnx"
    out.write_text("keep me")
    result = run(model, "--data", models["reused_relu.data"], "-o", out)
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_text() == "keep me"
    result = run(model, "--data", models["reused_relu.data"], "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:1] == b"\x08"  # an ONNX model now


def test_model_is_never_the_output(models: dict) -> None:
    model = models["reused_relu.onnx"]
    before = sha256(model)
    result = run(model, "--data", models["reused_relu.data"], "-o", model, "--force")
    assert result.exit_code == 2 and "overwrite the input" in result.output
    assert sha256(model) == before


def test_dry_run_prints_the_plan_and_writes_nothing(models: dict, out_dir: Path) -> None:
    result = run(models["reused_relu.pt2"], "--data", models["reused_relu.data"], "-o", out_dir / "m.pt2",
                 "--dry-run", "--select", "relu#*", "--min-dead-ratio", "0.25")
    assert result.exit_code == 0, result.output
    assert "relu#2" in result.stdout and "Dry run: nothing written." in result.stdout
    assert "relu#3" in result.stdout and "\nrelu " not in result.stdout  # relu#3 has 2/8 dead: 0.25 passes
    assert leftovers(out_dir) == []


def test_a_report_is_reused_only_for_its_own_model(models: dict, out_dir: Path) -> None:
    report = out_dir.parent / "r.json"
    scanned = CliRunner().invoke(app, ["scan", str(models["reused_relu.onnx"]), "--data",
                                       str(models["reused_relu.data"]), "-f", "json", "-o", str(report)])
    assert scanned.exit_code == 0, scanned.output
    result = run(models["reused_relu.onnx"], "--report", report, "--data", models["reused_relu.data"],
                 "-o", out_dir / "m.onnx")
    assert result.exit_code == 0, result.output
    wrong = run(models["leaky.onnx"], "--report", report, "-o", out_dir / "x.onnx")
    assert wrong.exit_code == 2 and "not a report of" in wrong.output
    assert leftovers(out_dir) == ["m.onnx"]


def test_failed_verification_exits_3_and_leaves_out_as_it_was(models: dict, out_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from relu_doctor.patching import verify

    monkeypatch.setattr(verify.SiteCheck, "problems", lambda self: ["forced failure"])
    out = out_dir / "m.pt2"
    out.write_text("old model")
    model = models["reused_relu.pt2"]
    before = sha256(model)
    result = run(model, "--data", models["reused_relu.data"], "-o", out, "--force")
    assert result.exit_code == 3, result.output
    assert "verification failed" in result.output and "forced failure" in result.output
    assert out.read_text() == "old model" and leftovers(out_dir) == ["m.pt2"]
    assert sha256(model) == before


@pytest.mark.parametrize("interrupt", [RuntimeError("writer bug"), KeyboardInterrupt(),
                                       OSError(errno.ENOSPC, "No space left on device")])
def test_a_write_that_fails_midway_leaves_no_file(models: dict, out_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                  interrupt: BaseException) -> None:
    import torch

    def half_write(self: Path, data: bytes) -> int:  # the model's bytes, cut short
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise interrupt

    monkeypatch.setattr(Path, "write_bytes", half_write)
    model = models["reused_relu.state_dict"]
    before = sha256(model)
    result = run(model, "--arch", case("reused_relu").factory, "--data", models["reused_relu.data"],
                 "-o", out_dir / "m.pt")
    expected = {RuntimeError: 3, KeyboardInterrupt: 130, OSError: 2}[type(interrupt)]
    assert result.exit_code == expected, result.output
    assert leftovers(out_dir) == []
    assert sha256(model) == before
    assert torch.load(model, weights_only=True)  # still a state dict


def test_torchscript_is_refused_with_the_formats_that_can_be_patched(models: dict, out_dir: Path) -> None:
    result = run(models["reused_relu.script"], "--data", models["reused_relu.data"], "-o", out_dir / "m.pt")
    assert result.exit_code == 2
    assert "TorchScript" in result.output and ".pt2" in result.output and "--to torchscript" in result.output
    assert leftovers(out_dir) == []


def test_a_model_without_dying_relus_needs_no_patch(models: dict, out_dir: Path) -> None:
    result = run(models["leaky.onnx"], "--data", models["leaky.data"], "-o", out_dir / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "Nothing to patch" in result.stdout and leftovers(out_dir) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--slope", "0"], "--slope"),
    (["--mode", "wide"], "--mode"),
    (["--min-dead-ratio", "2"], "--min-dead-ratio"),
    (["--select", "nothing*"], "matches none"),
    (["--to", "onnx"], "--to onnx contradicts -o"),  # OUT is m.pt2 (issue 15: checked before any work)
])
def test_wrong_flags_exit_2(models: dict, out_dir: Path, args: list[str], message: str) -> None:
    result = run(models["reused_relu.pt2"], "--data", models["reused_relu.data"], "-o", out_dir / "m.pt2", *args)
    assert result.exit_code == 2 and message in result.output
    assert leftovers(out_dir) == []


def test_out_is_required_unless_dry_run(models: dict) -> None:
    result = run(models["reused_relu.onnx"], "--data", models["reused_relu.data"])
    assert result.exit_code == 2 and "-o OUT" in result.output


def test_a_pickled_module_needs_trust(models: dict, out_dir: Path) -> None:
    model = models["reused_relu.module"]
    result = run(model, "--data", models["reused_relu.data"], "-o", out_dir / "m.pt")
    assert result.exit_code == 2 and "--trust-pickle" in result.output
    result = run(model, "--data", models["reused_relu.data"], "-o", out_dir / "m.pt", "--trust-pickle",
                 "--select", "relu#3")
    assert result.exit_code == 0, result.output
    # the patched call is a functional prelu now, yet it keeps its name (the model records it)
    assert "name now" not in result.stdout


def test_outs_extension_names_the_format_of_an_eager_patch(models: dict, out_dir: Path) -> None:
    """`patch weights.pt --arch ... -o model.onnx` writes ONNX, never a pickle named .onnx (issue 15)."""
    import onnx

    from tests.models import case

    out = out_dir / "model.onnx"
    result = run(models["reused_relu.state_dict"], "--arch", case("reused_relu").factory,
                 "--data", models["reused_relu.data"], "-o", out)
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.stdout and "(ONNX)" in result.stdout
    assert out.read_bytes()[:2] != b"PK" and onnx.load(str(out)).graph.node  # a protobuf, not a zip/pickle
