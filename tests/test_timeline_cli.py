"""`relu-doctor timeline`: history and checkpoints in, table/json/markdown/csv out, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _model(dead: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
    with torch.no_grad():
        model[0].bias.fill_(0.5)
        model[0].weight[:dead] = 0
        model[0].bias[:dead] = -1
    return model


@pytest.fixture()
def history(tmp_path: Path) -> Path:
    path = tmp_path / "relu.jsonl"
    x = torch.randn(16, 4)
    for dead in (0, 1, 3):  # three windows of one step each, more neurons dead each time
        model = _model(dead)
        with rd.watch(model, every=1, window=1, history=path, start_step=10 * dead) as w:
            model(x)
            w.step()
    return path


def test_history_to_json(history: Path) -> None:
    result = run("timeline", history, "--format", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["schema"] == "relu-doctor/timeline/v1"
    assert [p["step"] for p in d["points"]] == [0, 10, 30]
    assert d["sites"][0]["dead_ratio"] == [0.0, 1 / 6, 0.5]
    assert d["sites"][0]["died_at"] == {"0": 10, "1": 30, "2": 30}


def test_table_markdown_csv_and_output_file(history: Path, tmp_path: Path) -> None:
    table = run("timeline", history)
    assert table.exit_code == 0 and "neuron(s) 1, 2 dead from step 30" in table.stdout
    md = run("timeline", history, "-f", "markdown")
    assert "| `1` | relu | 6 | 0.0% | 16.7% | 50.0% |" in md.stdout
    out = tmp_path / "t.csv"
    assert run("timeline", history, "-o", out).exit_code == 0
    assert out.read_text().startswith("site,kind,neurons,step")


def test_fail_new_dead_gate(history: Path) -> None:
    assert run("timeline", history, "--fail-new-dead", "50").exit_code == 0
    failed = run("timeline", history, "--fail-new-dead", "40", "-f", "json")
    assert failed.exit_code == 1 and "site 1: 3 of 6 neurons died" in failed.stderr
    assert run("timeline", history, "--fail-new-dead", "400").exit_code == 2


def test_checkpoints_by_file_name_number(tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, torch.randn(16, 4).numpy())
    for step, dead in ((200, 2), (100, 1), (3, 0)):
        torch.jit.script(_model(dead)).save(str(tmp_path / f"ckpt-{step}.pt"))
    paths = sorted(tmp_path.glob("ckpt-*.pt"))
    result = run("timeline", *paths, "--data", data, "-f", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert [p["step"] for p in d["points"]] == [3, 100, 200]
    assert d["sites"][0]["died_at"] == {"0": 100, "1": 200}
    assert "ordered by number in the file name" in result.stderr


@pytest.mark.parametrize("content", [b"{not json", b'{"schema": "relu-doctor/report/v1"}\n', b"{}\n"])
def test_bad_history_exits_2(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(content)
    result = run("timeline", path)
    assert result.exit_code == 2 and "h.jsonl:1" in result.stderr and "Traceback" not in result.output


def test_misuse_exits_2(history: Path, tmp_path: Path) -> None:
    assert run("timeline", history, history).exit_code == 2
    assert run("timeline", history, "--data", "x.npy").exit_code == 2
    assert run("timeline", tmp_path / "missing.pt").exit_code == 2


def test_html_page_and_neuron_arrays(history: Path, tmp_path: Path) -> None:
    page, arrays = tmp_path / "t.html", tmp_path / "n.npz"
    result = run("timeline", history, "-o", page, "--neurons", arrays)
    assert result.exit_code == 0, result.output
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
    with np.load(arrays) as n:
        assert n["steps"].tolist() == [0, 10, 30]
        assert (n["0/fires"] == 0).sum(axis=1).tolist() == [0, 1, 3]  # dead neurons per point
