"""Model code is guest code: what it prints never reaches stdout (Python or TorchScript's C++),
an exit from it is never a success, a forward that never returns is stopped by --timeout,
and inputs that would block (a FIFO as --data, impossible torchrun settings) are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app

from .hostile import Exiting, Hanging, Printing

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def _state_dict(tmp_path: Path, module: torch.nn.Module) -> str:
    path = tmp_path / "w.pt"
    torch.save(module.state_dict(), path)
    return str(path)


def check_refused(result: object, message: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert message in result.stderr, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr  # type: ignore[attr-defined]


class ScriptPrinting(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("GUEST OUTPUT from TorchScript")
        return torch.relu(x)


def test_torchscript_prints_go_to_stderr_and_stdout_stays_json(tmp_path: Path) -> None:
    """TorchScript's print writes to file descriptor 1 from C++: only an fd-level guard keeps it out."""
    model = tmp_path / "m.pt"
    torch.jit.script(ScriptPrinting()).save(str(model))
    result = subprocess.run([sys.executable, "-m", "relu_doctor", "scan", str(model), "--input-shape", "4",
                             "--samples", "4", "-f", "json", "-q"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "relu-doctor/report/v1"
    assert "GUEST OUTPUT from TorchScript" in result.stderr


def test_python_prints_in_forward_do_not_reach_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["scan", _state_dict(tmp_path, Printing()), "--arch", "tests.hostile:Printing",
                                      "--input-shape", "4", "--samples", "4", "-f", "json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sites"]
    assert "GUEST OUTPUT from forward" in result.stderr


@pytest.mark.parametrize("arch, where", [("tests.hostile:Exiting", "loading"),
                                         ("tests.hostile:exiting_factory", "loading the model")])
def test_an_exit_from_model_code_is_never_a_success(arch: str, where: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["scan", _state_dict(tmp_path, Printing()), "--arch", arch,
                                      "--input-shape", "4", "--samples", "4", "--fail-dead-ratio", "0.5"])
    check_refused(result, "the model's code exited (SystemExit(0))")
    assert result.stdout == ""


def test_sys_exit_in_forward_names_the_forward_pass() -> None:
    with pytest.raises(rd.UserError, match=r"exited \(SystemExit\(0\)\) while the model's forward pass on batch 1"):
        rd.scan(Exiting(), input_shape=(4,), samples=4)


def test_a_forward_that_never_returns_is_stopped_by_the_timeout() -> None:
    with pytest.raises(rd.UserError, match=r"timed out after 0.5 s while the model's forward pass on batch 1 "
                                           r"\(last site reached: /relu\)"):
        rd.scan(Hanging(), input_shape=(4,), samples=4, timeout=0.5)


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused(value: float) -> None:
    with pytest.raises(rd.UserError, match="--timeout must be a positive number"):
        rd.scan(Printing(), input_shape=(4,), samples=4, timeout=value)


def test_a_fifo_as_data_or_model_is_refused_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)  # nobody writes to it: reading would block forever
    model = str(SAMPLES / "sample_cnn.onnx")
    check_refused(CliRunner().invoke(app, ["scan", model, "--data", str(fifo)]), "is not a regular file")
    check_refused(CliRunner().invoke(app, ["scan", str(fifo)]), "is not a regular file")


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "the rank must be in 0..1"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "the rank must be in 0..1"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT not set"),
])
def test_impossible_torchrun_settings_are_refused_up_front(env: dict, message: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["scan", str(SAMPLES / "sample_cnn.onnx"), "--samples", "4"])
    check_refused(result, message)


class Spinning(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i >= 0:  # TorchScript's interpreter loops in C++, where no Python signal handler runs
            i = i + 1
        return torch.relu(x)


_SPIN = """
import relu_doctor as rd
rd.scan({path!r}, input_shape=(4,), samples=4, timeout=4)
print("returned")
"""


@pytest.mark.slow  # waits out the timeout and the watchdog's grace period (about 15 s)
def test_a_forward_stuck_in_cpp_is_ended_by_the_watchdog(tmp_path: Path) -> None:
    path = tmp_path / "spin.pt"
    torch.jit.script(Spinning()).save(str(path))
    result = subprocess.run([sys.executable, "-c", _SPIN.format(path=str(path))], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "timed out after 4 s while the model's forward pass on batch 1" in result.stderr
    assert "returned" not in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["scan", "patch"])
def test_the_timeout_flag_stops_a_forward_that_never_returns(command: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out = ["-o", str(tmp_path / "out.pt")] if command == "patch" else []
    result = CliRunner().invoke(app, [command, _state_dict(tmp_path, Printing()), "--arch", "tests.hostile:Hanging",
                                      "--input-shape", "4", "--samples", "4", "--timeout", "2", *out])
    check_refused(result, "timed out after 2 s while the model's forward pass on batch 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


@pytest.mark.parametrize("value", ["0", "-3", "nan", "soon"])
def test_a_bad_timeout_flag_is_a_usage_error(value: str) -> None:
    result = CliRunner().invoke(app, ["scan", str(SAMPLES / "sample_cnn.onnx"), "--timeout", value])
    assert result.exit_code == 2 and "--timeout" in result.stderr and "Traceback" not in result.output
