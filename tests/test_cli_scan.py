"""The scan command end to end: output formats, streams, exit codes, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.models import case, sample_data


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    c = case("reused_relu")
    path = folder / "m.pt"
    torch.jit.script(c.build()).save(str(path))
    data = folder / "x.npy"
    np.save(data, sample_data(c, n=40))
    return path, data


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_table_names_every_site_and_the_detection_floor(model: tuple[Path, Path]) -> None:
    path, data = model
    result = run("scan", str(path), "--data", str(data))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("relu", "relu#2", "relu#3"):
        assert f" {name} " in out
    assert "40 inputs" in out and "7.2%" in out  # 1 - 0.05^(1/40) = 7.2%
    assert "7 of 24 neurons" in out  # planted: 2 + 3 + 2
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "\x1b[" not in out


def test_json_on_stdout_is_clean_and_warnings_go_to_stderr(model: tuple[Path, Path]) -> None:
    path, _ = model
    result = run("scan", str(path), "--input-shape", "3,8,8", "--samples", "16", "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["schema"] == "relu-doctor/report/v1"
    assert report["sample"] == {"source": "synthetic", "samples": 16, "batch_size": 32, "seed": 0,
                                "inputs": [{"name": "x", "shape": [3, 8, 8], "dtype": "float32"}]}
    assert set(report["summary"]) >= {"sites", "neurons", "dead", "dead_ratio", "sparsity", "dormant",
                                      "detection_floor"}
    site_keys = {"index", "name", "kind", "op", "params", "shape", "axis", "neurons", "grad_blocked", "dead",
                 "dead_ratio", "dead_indices", "always_on", "saturated", "dormant", "rarely_active", "sparsity",
                 "nonfinite", "mean", "max"}
    assert site_keys <= set(report["sites"][0])
    assert "synthetic inputs" in result.stderr


def test_output_file_is_written_and_stdout_stays_empty(model: tuple[Path, Path], tmp_path: Path) -> None:
    path, data = model
    out = tmp_path / "r.json"
    result = run("scan", str(path), "--data", str(data), "-f", "json", "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(out.read_text())["summary"]["dead"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_synthetic_scans_repeat_and_do_not_depend_on_batch_size(model: tuple[Path, Path]) -> None:
    path, _ = model
    a = run("scan", str(path), "--input-shape", "3,8,8", "--samples", "20", "-f", "json", "--batch-size", "7")
    b = run("scan", str(path), "--input-shape", "3,8,8", "--samples", "20", "-f", "json", "--batch-size", "32")
    sa, sb = json.loads(a.stdout)["sites"], json.loads(b.stdout)["sites"]
    assert [s["counters"]["fires"] for s in sa] == [s["counters"]["fires"] for s in sb]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "missing.pt"], "model file not found"),
        (["scan", "{path}", "--data", "{data}", "--samples", "0"], "--samples must be at least 1"),
        (["scan", "{path}", "--data", "{data}", "--batch-size", "-3"], "--batch-size must be at least 1"),
        (["scan", "{path}"], "the shape of input 'x' is unknown"),
        (["scan", "{path}", "--input-shape", "3,9,9,9"], "the model failed on inputs of shape (32, 3, 9, 9, 9)"),
        (["scan", "{path}", "--input-shape", "3,a"], "is not a shape"),
        (["scan", "{path}", "--data", "{wrong}"], "has shape (5, 4), but the model expects"),
        (["scan", "{path}", "--input-shape", "3,8,8", "--neuron-axis", "sideways"], "sideways"),
    ],
)
def test_user_errors_exit_2_with_a_short_message(model: tuple[Path, Path], tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    path, data = model
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 4), np.float32))
    args = [a.format(path=path, data=data, wrong=wrong) for a in args]
    if "--data" in args and "wrong" in args[-1]:
        args = ["scan", str(path), "--data", str(wrong), "--input-shape", "3,8,8"]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 3  # the error, the hint (and a wrapped line at most)


_HELP_WITHOUT_TORCH = """
import sys, typer
from relu_doctor.cli import app
from typer.testing import CliRunner
commands = sorted(typer.main.get_command(app).commands)
for args in [["--version"], ["--help"], *([c, "--help"] for c in commands)]:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and r.stdout.strip(), (args, r.output)
    assert args == ["--version"] or "Usage" in r.stdout, (args, r.stdout)
print(len(commands), "torch" in sys.modules, "numpy" in sys.modules)
"""


def test_help_and_version_do_not_import_torch() -> None:
    """--version, --help and every command's --help, in a fresh interpreter: none imports torch."""
    out = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_TORCH], capture_output=True, text=True,
                         check=True).stdout
    commands, torch_loaded, numpy_loaded = out.split()
    assert int(commands) >= 4  # scan, patch, diff, merge at least
    assert (torch_loaded, numpy_loaded) == ("False", "False")


def test_installed_script_and_python_m_agree(model: tuple[Path, Path]) -> None:
    path, data = model
    script = Path(sys.executable).with_name("relu-doctor")
    outputs = [
        subprocess.run([*cmd, "scan", str(path), "--data", str(data), "-f", "json", "-q"], capture_output=True,
                       text=True, check=True).stdout
        for cmd in ([str(script)], [sys.executable, "-m", "relu_doctor"])
    ]
    assert json.loads(outputs[0])["sites"] == json.loads(outputs[1])["sites"]
