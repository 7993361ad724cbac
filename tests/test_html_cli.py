"""The CLI's pictures and per-neuron data: scan/diff --format html, --baseline with html,
--neurons beside the JSON report, and the clear errors (missing extra, clashing paths)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.neurons import read_neurons

ROOT = Path(__file__).resolve().parent.parent
MODEL, DATA = ROOT / "sample_models" / "sample_cnn.pt", ROOT / "sample_models" / "sample_batch.npy"


def run(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    out = {"json": folder / "r.json", "npz": folder / "n.npz", "html": folder / "r.html"}
    result = run("scan", MODEL, "--data", DATA, "-f", "json", "-o", out["json"], "--neurons", out["npz"], "-q")
    assert result.exit_code == 0, result.output
    result = run("scan", MODEL, "--data", DATA, "-f", "html", "-o", out["html"], "-q")
    assert result.exit_code == 0 and result.stdout == "", result.output
    return out


def test_neurons_file_reproduces_the_json_report(scanned: dict[str, Path]) -> None:
    report, arrays = json.loads(scanned["json"].read_text()), read_neurons(scanned["npz"])
    assert list(arrays["names"]) == [s["name"] for s in report["sites"]]
    tau = report["settings"]["tau"]
    for site in report["sites"]:
        i = site["index"]
        fires, entries, abs_sum = arrays[f"{i}/fires"], arrays[f"{i}/entries"], arrays[f"{i}/abs_sum"]
        mean_abs = abs_sum / entries
        assert [int(j) for j in np.nonzero(fires == 0)[0]] == site["dead_indices"]
        assert int((fires == 0).sum()) == site["dead"]
        assert 1 - fires.sum() / entries.sum() == pytest.approx(site["sparsity"], abs=1e-12)
        assert int((mean_abs / mean_abs.mean() <= tau).sum()) == site["dormant"]
        assert fires.tolist() == site["counters"]["fires"]  # the same counters as the JSON's


def test_scan_html_is_one_page_with_a_bar_per_site(scanned: dict[str, Path]) -> None:
    text = scanned["html"].read_text()
    assert text.startswith("<!doctype html>") and text.count('<g id="dead-') == 4


def test_diff_and_baseline_in_html(scanned: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "d.html"
    result = run("diff", scanned["json"], scanned["json"], "-f", "html", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "relu-doctor diff" in text and text.count('<g id="change-') == 4 and text.count('<g id="dead-') == 4
    out = tmp_path / "b.html"
    result = run("scan", MODEL, "--data", DATA, "-f", "html", "--baseline", scanned["json"], "-o", out, "-q")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert '<b class="">4</b><span>sites matched</span>' in text  # the diff against the baseline ...
    assert text.count('<g id="dead-') == 4  # ... then the scan


def test_missing_matplotlib_is_exit_2_before_the_scan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the html extra were not installed
    monkeypatch.setattr("relu_doctor.api.scan", lambda *a, **k: pytest.fail("scanned before the check"))
    result = run("scan", MODEL, "--data", DATA, "-f", "html", "-o", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "matplotlib" in result.stderr and "relu-doctor[html]" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "r.html").exists()


def test_neurons_path_clashes_are_refused(tmp_path: Path) -> None:
    same = tmp_path / "x"
    result = run("scan", MODEL, "--data", DATA, "-f", "json", "-o", same, "--neurons", same)
    assert result.exit_code == 2 and "same file" in result.stderr
    result = run("scan", MODEL, "--data", DATA, "--neurons", DATA)
    assert result.exit_code == 2 and "overwrite the input" in result.stderr


def test_html_extension_of_o_picks_the_page(scanned: dict[str, Path], tmp_path: Path) -> None:
    result = run("scan", MODEL, "--data", DATA, "-o", tmp_path / "r.HTML", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.HTML").read_text().startswith("<!doctype html>")
    result = run("diff", scanned["json"], scanned["json"], "-o", tmp_path / "d.htm")
    assert result.exit_code == 0, result.output
    assert "relu-doctor diff" in (tmp_path / "d.htm").read_text()
