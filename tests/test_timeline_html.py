"""`relu-doctor timeline ... --format html` and `--neurons`: the page and the arrays over time
of a watch history whose points plant more dead neurons step by step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app
from relu_doctor.neurons import read_neurons
from tests.models import case, sample_data


def run(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """Three windows of the catalogue MLP; relu1's neuron 15 is made dead from the second on."""
    import torch

    c = case("mlp")
    data = sample_data(c, 32)
    path = tmp_path_factory.mktemp("timeline") / "history.jsonl"
    reports, lines = [], []
    model = c.build()
    for k in range(3):
        if k == 1:
            with torch.no_grad():
                model.fc1.weight[15] = 0.0
                model.fc1.bias[15] = -1.0
        r = rd.scan(model, data)
        line = r.to_dict()
        line["sample"].update(source="training", steps=[100 * k, 100 * k + 9])  # as watch writes it
        lines.append(json.dumps(line) + "\n")
        reports.append(r)
    path.write_text("".join(lines))
    return path, reports


def test_timeline_html_and_neurons(history: tuple[Path, list[Any]], tmp_path: Path) -> None:
    path, reports = history
    page, npz = tmp_path / "t.html", tmp_path / "t.npz"
    result = run("timeline", path, "-o", page, "--neurons", npz, "-q")
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "relu-doctor timeline: 3 points" in text
    assert text.count('<g id="dead-') == len(reports[-1].sites)
    arrays = read_neurons(npz)
    assert list(arrays["steps"]) == [9, 109, 209]
    names = list(arrays["names"])
    i = names.index(reports[0].sites[0].name)
    fires = arrays[f"{i}/fires"]
    assert fires.shape == (3, reports[0].sites[0].neurons)
    for k in range(3):
        np.testing.assert_array_equal(fires[k], reports[k].sites[0].counters.fires)
    assert fires[0][15] > 0 and fires[1][15] == 0 == fires[2][15]  # died at the second window


def test_missing_matplotlib_fails_before_reading(history: tuple[Path, list[Any]], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("relu_doctor.cli.timeline._from_history", lambda *a: pytest.fail("read before the check"))
    result = run("timeline", history[0], "-o", tmp_path / "t.html")
    assert result.exit_code == 2 and "relu-doctor[html]" in result.stderr
    assert not (tmp_path / "t.html").exists()
