"""Markdown and CSV reports, and the terminal rules: NO_COLOR, no ANSI off a terminal, 80 columns."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.compare import diff
from relu_doctor.render.csv import COLUMNS, render_csv
from relu_doctor.render.diff import NAME_WIDTH as DIFF_NAME_WIDTH
from relu_doctor.render.diff import render_diff_table
from relu_doctor.render.markdown import TOP, render_markdown
from relu_doctor.render.table import render_table
from relu_doctor.report import Report, Site
from relu_doctor.stats import SiteCounters

LONG_NAME = "encoder_stage_number_one.residual_block_with_a_long_name.1"
COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7])(;[0-9;]*)?m")  # a foreground colour SGR code


def run(*args: object, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1", **(env or {})})


def make_report(dead_per_site: list[int], names: list[str] | None = None, neurons: int = 8) -> Report:
    sites = []
    for i, dead in enumerate(dead_per_site):
        fires = np.array([0] * dead + [3] * (neurons - dead))
        counters = SiteCounters(neurons, rows=10, samples=10, fires=fires, sample_fires=np.minimum(fires, 1),
                                abs_sum=fires * 0.5, total=float(fires.sum()) * 0.5, max=2.0)
        name = names[i] if names else f"layer{i}.relu"
        sites.append(Site(i, name, "relu", "nn.ReLU", {}, [neurons, 4, 4], 1, counters))
    return Report(model={"path": "m.pt", "format": "torchscript", "sha256": "ab" * 32},
                  sample={"source": "x.npy", "samples": 10, "batch_size": 32, "seed": None, "inputs": []},
                  settings={"tau": 0.025, "neuron_axis": "auto", "include_smooth": False}, sites=sites)


# -- Markdown ------------------------------------------------------------------------------------------------------


def test_markdown_of_a_small_model_is_one_table_in_execution_order() -> None:
    md = render_markdown(make_report([1, 4, 0]))
    assert "<details>" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert [r.split("|")[2].strip() for r in rows] == ["`layer0.relu`", "`layer1.relu`", "`layer2.relu`"]
    assert md.startswith("### relu-doctor: 5 dead of 24 ReLU neurons (20.8%)")


def test_markdown_of_a_big_model_shows_worst_first_then_all_folded() -> None:
    dead = [0] * 25
    dead[3], dead[17], dead[20] = 2, 6, 2
    md = render_markdown(make_report(dead))
    head, _, folded = md.partition("<details><summary>All 25 sites</summary>")
    worst = [line.split("|")[2].strip() for line in head.splitlines() if line.startswith("| ") and "`" in line]
    assert worst == ["`layer17.relu`", "`layer3.relu`", "`layer20.relu`"]  # ratio, then execution order
    assert "**Sites with dead neurons** (3, highest dead ratio first)" in head
    assert folded.count("\n| ") == 25 + 1 and folded.rstrip().endswith("</details>")
    chart = head.split("```mermaid", 1)[1].split("```", 1)[0]  # a picture of fixed height once rendered
    assert len(head.replace(chart, "").splitlines()) < 20  # compact: one screen before the fold


def test_markdown_caps_the_worst_list_and_says_when_nothing_is_dead() -> None:
    md = render_markdown(make_report([1] * (TOP + 5)))
    assert f"worst {TOP} of {TOP + 5}" in md
    assert "No dead neurons in ReLU-type sites." in render_markdown(make_report([0] * (TOP + 1)))


def test_markdown_escapes_site_names_that_would_break_the_table() -> None:
    md = render_markdown(make_report([1], names=["a|b`c"]))
    row = next(line for line in md.splitlines() if "a\\|b" in line)
    assert "`` a\\|b`c ``" in row  # a double-backtick code span, the pipe escaped
    assert len(re.findall(r"(?<!\\)\|", row)) == 9  # still 8 cells


def test_markdown_shows_gate_violations() -> None:
    from relu_doctor.gates import evaluate

    report = make_report([4, 1])
    report.gates = evaluate(report.sites, fail_dead_ratio=0.25)
    md = render_markdown(report)
    assert "Gates: ❌ failed." in md and "- ❌ site layer0.relu: dead ratio 50.0% > 25.0% (fail-dead-ratio)" in md


# -- CSV -----------------------------------------------------------------------------------------------------------


def test_csv_round_trips_through_the_csv_module() -> None:
    names = ['odd, "quoted"\nname', "layer1.relu", "=formula"]
    report = make_report([2, 0, 8], names=names)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(rows) == 3
    for row, site in zip(rows, report.sites, strict=True):
        d = site.to_dict(with_counters=False)
        assert list(row) == list(d) == COLUMNS
        # quotes and commas round-trip; a formula is quoted and a line break shown (issue 12: CSV injection)
        assert row["name"] == {'odd, "quoted"\nname': 'odd, "quoted"\\x0aname', "=formula": "'=formula"}.get(
            site.name, site.name)
        assert int(row["dead"]) == d["dead"] and float(row["dead_ratio"]) == d["dead_ratio"]
        assert float(row["sparsity"]) == d["sparsity"] and float(row["mean"]) == d["mean"]
        assert [int(i) for i in row["dead_indices"].split()] == d["dead_indices"]
        assert [int(i) for i in row["shape"].split()] == d["shape"]
        assert row["grad_blocked"] == "true" and row["params"] == ""


def test_csv_of_a_model_without_sites_is_the_header() -> None:
    assert render_csv(make_report([])) == ",".join(COLUMNS) + "\n"


def test_csv_params_are_json() -> None:
    report = make_report([1])
    report.sites[0].params = {"max": 4.0}
    row = next(csv.DictReader(io.StringIO(render_csv(report))))
    assert json.loads(row["params"]) == {"max": 4.0}


# -- through the CLI, and the terminal rules -----------------------------------------------------------------------


class Stage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.residual_block_with_a_long_name = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual_block_with_a_long_name(x)


class DeepNames(nn.Module):
    """Two ReLUs, one at a long module path, to check that tables shorten names in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder_stage_number_one = Stage()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder_stage_number_one(x))


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("render")
    torch.manual_seed(0)
    path, data = folder / "deep.pt", folder / "x.npy"
    torch.jit.trace(DeepNames().eval(), torch.zeros(1, 3, 4, 4)).save(str(path))
    np.save(data, np.random.default_rng(0).standard_normal((8, 3, 4, 4), dtype=np.float32))
    return path, data


def test_cli_markdown_and_csv(deep: tuple[Path, Path], tmp_path: Path) -> None:
    path, data = deep
    md = run("scan", path, "--data", data, "--format", "markdown")
    assert md.exit_code == 0 and md.stdout.startswith("### relu-doctor:")
    assert f"`{LONG_NAME}`" in md.stdout  # full names in Markdown
    out = tmp_path / "r.csv"
    result = run("scan", path, "--data", data, "--format", "csv", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == [LONG_NAME, "head.2"]


def test_tables_fit_80_columns_without_ansi_and_shorten_long_names(deep: tuple[Path, Path], tmp_path: Path) -> None:
    path, data = deep
    result = run("scan", path, "--data", data)
    assert result.exit_code == 0
    assert "\x1b[" not in result.stdout
    assert max(map(len, result.stdout.splitlines())) <= 80
    # too long for 80 columns: shortened (issue 15: keeping the end and what tells the sites apart)
    row = next(line for line in result.stdout.splitlines() if "name.1" in line)
    assert LONG_NAME not in result.stdout and "…" in row and "long_name.1" in row
    wide = run("scan", path, "--data", data, env={"COLUMNS": "200"})
    assert wide.exit_code == 0 and LONG_NAME in wide.stdout  # the terminal's width is used
    base = tmp_path / "base.json"
    assert run("scan", path, "--data", data, "--format", "json", "-o", base).exit_code == 0
    d = run("diff", base, base)
    assert d.exit_code == 0 and "\x1b[" not in d.stdout
    assert max(map(len, d.stdout.splitlines())) <= 80
    drow = next(line for line in d.stdout.splitlines() if "name.1" in line)
    assert LONG_NAME not in d.stdout and "…" in drow and "long_name.1" in drow  # shortened as the scan's table
    assert len(drow.split()[0]) >= DIFF_NAME_WIDTH  # given at least the old width
    assert LONG_NAME in run("diff", base, base, env={"COLUMNS": "200"}).stdout


def _terminal_output(draw: object, monkeypatch: pytest.MonkeyPatch, no_color: bool) -> str:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system="standard")
    draw(console)  # type: ignore[operator]
    return buffer.getvalue()


@pytest.mark.parametrize("which", ["scan", "diff"])
def test_no_color_is_honoured_on_a_terminal(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report = make_report([4, 1, 0])
    worse = make_report([6, 1, 0])

    def draw(console: Console) -> None:
        if which == "scan":
            render_table(report, console)
        else:
            render_diff_table(diff(report, worse, fail_increase=1), console)

    assert COLOUR.search(_terminal_output(draw, monkeypatch, no_color=False))  # colour by severity
    assert not COLOUR.search(_terminal_output(draw, monkeypatch, no_color=True))
