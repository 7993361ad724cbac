"""Hostile flags, names and streams through the CLI (issue 12): exit 2 in one or two lines, nothing raw.

The models here are small ONNX graphs built in code (an ONNX scan needs no torch, so these
stay fast): MatMul -> Relu chains whose node names are the site names, with a weight row
of -5 that plants one dead neuron per site after the first.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from relu_doctor.cli import app

HOSTILE = ["\x1b[31mred\x1b[0m[/bold]", '=HYPERLINK("http://evil.example","click")', "a|b`c<script>\nforged row"]


def chain_model(path: Path, names: list[str], dtype: int = TensorProto.FLOAT, op: str = "Relu") -> Path:
    """x (N, 4) -> [MatMul W -> Relu named n] for n in names. Site i > 0 has neuron 3 dead (W's column 3 is -5 x)."""
    w = np.eye(4, dtype=np.float32)
    w[3, 3] = -5.0
    nodes, previous = [], "x"
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT, name="cast"))
        previous = "xf"
    for i, name in enumerate(names):
        weight = "I" if i == 0 else "W"
        nodes.append(helper.make_node("MatMul", [previous, weight], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node(op, [f"m{i}"], [f"r{i}"], name=name))
        previous = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", dtype, ["N", 4])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(w, "W"),
                               numpy_helper.from_array(np.eye(4, dtype=np.float32), "I")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run(*args: object, columns: int | str = 80) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    model = chain_model(folder / "hostile.onnx", ["first", *HOSTILE])
    np.save(folder / "x.npy", np.abs(np.random.default_rng(0).standard_normal((16, 4), dtype=np.float32)) + 0.1)
    return model, folder / "x.npy"


# -- flags are checked where they are parsed --------------------------------------------------------------------

BAD_FLAGS = [
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--input-range", "0,inf"], "must be finite"),
    (["--input-range", "nan,1"], "must be finite"),
    (["--input-range", "1,1"], "LO must be below HI"),
    (["--device", "cuda:99"], "cuda:99"),
    (["--device", "gpu"], "unknown --device"),
    (["--image-size", "0,0"], "must be one or two positive numbers"),
    (["--image-size", "100000,100000"], "would need 139.7 GiB"),
    (["--mean", "1,2"], "needs 3 values"),
    (["--std", "0,1,1"], "positive"),
    (["--samples", "0"], "--samples must be at least 1"),
    (["--batch-size", "many"], "is not a number"),
    (["--tau", "nan"], "between 0 and 1"),
    (["--shard", "2/2"], "I must be in 0..N-1"),
    (["--top", "0"], "--top must be at least 1"),
    (["--fail-dead-ratio", "25"], "For 25% pass 0.25"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_exit_2_in_two_lines(hostile: tuple[Path, Path], flags: list[str], message: str) -> None:
    model, data = hostile
    for command in (["scan", model], ["patch", model, "--dry-run"]):
        if flags[0] in ("--top", "--fail-dead-ratio", "--shard") and command[0] == "patch":
            continue  # scan-only flags
        result = run(*command, "--data", data, *flags)
        assert result.exit_code == 2, result.output
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) <= 2


def test_synthetic_samples_beyond_the_limit_are_refused_before_any_batch(hostile: tuple[Path, Path]) -> None:
    model, _ = hostile
    result = run("scan", model, "--samples", str(10**12))
    # 10**12 inputs of 4 float32: 14.6 TiB of synthetic input, refused (not generated until killed)
    assert result.exit_code == 2 and "would need 14.6 TiB of input (the limit is 64.0 GiB)" in result.stderr
    assert "RELU_DOCTOR_MAX_SAMPLE_BYTES" in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_an_image_folder_beyond_the_limit_is_refused_before_decoding(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(images / f"{i}.png")
    model = chain_model(tmp_path / "m.onnx", ["relu"])
    monkeypatch.setenv("RELU_DOCTOR_MAX_SAMPLE_BYTES", "400000")  # three 100x100 images need 450,000 bytes
    result = CliRunner().invoke(app, ["scan", str(model), "--data", str(images)])
    assert result.exit_code == 2 and "decoding the 3 images" in result.stderr and "439.5 KiB" in result.stderr


def test_an_integer_onnx_input_refuses_a_float_range(tmp_path: Path) -> None:
    model = chain_model(tmp_path / "ints.onnx", ["relu"], dtype=TensorProto.INT64)
    result = run("scan", model, "--input-range", "0.2,0.7")
    assert result.exit_code == 2 and "input 'x' is int64" in result.stderr and "whole numbers" in result.stderr
    ok = run("scan", model, "--input-range", "-3,4", "-f", "json", "-q")
    assert ok.exit_code == 0, ok.output


# -- names never reach a terminal, a spreadsheet or Markdown raw --------------------------------------------------


def test_hostile_names_are_shown_not_obeyed_in_every_format(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = hostile
    table = run("scan", model, "--data", data, columns=200)
    assert table.exit_code == 0, table.output  # `[/bold]` used to crash Rich (exit 3)
    assert "\x1b" not in table.stdout and "[/bold]" in table.stdout and "\\x1b[31mred" in table.stdout
    assert "forged row" in table.stdout and "\\x0aforged row" in table.stdout  # no line break from a name
    out = tmp_path / "r.csv"
    assert run("scan", model, "--data", data, "-o", out).exit_code == 0
    names = [row["name"] for row in csv.DictReader(out.open())]
    assert names[2] == "'" + HOSTILE[1]  # a spreadsheet shows it as text, never a live formula
    assert not any(n.startswith(("=", "+", "-", "@")) for n in names) and "\x1b" not in out.read_text()
    md = run("scan", model, "--data", data, "-f", "markdown", "--fail-dead-ratio", "0.1").stdout
    assert "\x1b" not in md and "\nforged row" not in md
    # in the table: a code span with a longer fence than the backtick inside, the pipe escaped
    assert "| `` a\\|b`c<script>\\x0aforged row `` |" in md
    # in the gate's list item (running text): markup and HTML escaped
    assert "- ❌ site a\\|b\\`c\\<script>\\\\x0aforged row: dead ratio" in md
    report = tmp_path / "r.json"
    assert run("scan", model, "--data", data, "-o", report).exit_code == 0
    diff = run("diff", report, report)
    assert diff.exit_code == 0 and "\x1b" not in diff.stdout and "[/bold]" in diff.stdout


def test_hostile_names_in_gate_messages_on_stderr(hostile: tuple[Path, Path]) -> None:
    model, data = hostile
    result = run("scan", model, "--data", data, "--fail-dead-ratio", "0.1", "-f", "json")
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\\x1b[31mred" in result.stderr and "[/bold]" in result.stderr


# -- pipes and terminals -------------------------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "relu_doctor", *args]


def test_a_reader_that_leaves_early_ends_the_run_quietly(hostile: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = hostile
    report = tmp_path / "r.json"
    assert run("scan", model, "--data", data, "-o", report).exit_code == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # `diff -f json | head -0`: the reader is gone before the first write
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run(_cli("diff", str(report), str(report), "-f", "json"), stdout=write, stderr=subprocess.PIPE,
                          env=env, text=True, timeout=60)
    os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""  # 128 + SIGPIPE, as a shell reports `yes | head -1`
    closed = subprocess.run(" ".join(_cli("diff", str(report), str(report), "-f", "json")) + " >&-", shell=True,
                            stderr=subprocess.PIPE, env=env, text=True, timeout=60)
    assert closed.returncode == 2 and "stdout is closed" in closed.stderr and "Traceback" not in closed.stderr


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "12", str(10**9)])
def test_absurd_terminal_widths_still_print_a_bounded_table(hostile: tuple[Path, Path], columns: str) -> None:
    model, data = hostile
    result = run("scan", model, "--data", data, columns=columns)
    assert result.exit_code == 0 and "sparsity" in result.stdout and "Gates:" in result.stdout
    assert max(map(len, result.stdout.splitlines())) <= 1000
    report = json.loads(run("scan", model, "--data", data, "-f", "json", columns=columns).stdout)
    assert len(report["sites"]) == 4
