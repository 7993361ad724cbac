"""What a newcomer sees (issue 15): output formats from -o, table widths and names, --top/--only-dead,
gates on shards, help text, and patch's output format from OUT's extension."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.test_cli_hardening import chain_model

# densenet's names: the block and the layer sit in the middle, the same relu names at the end
DENSE = [f"features.denseblock{b}.denselayer{layer}.relu{r}" for b in (1, 2) for layer in (1, 2, 12) for r in (1, 2)]


def run(*args: object, columns: int = 80) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("output")
    data = folder / "x.npy"
    np.save(data, np.abs(np.random.default_rng(0).standard_normal((32, 4), dtype=np.float32)) + 0.1)
    return {"dense": chain_model(folder / "dense.onnx", DENSE), "data": data, "folder": folder,
            "small": chain_model(folder / "small.onnx", ["a", "b", "c"]),
            "leaky": chain_model(folder / "leaky.onnx", ["l1", "l2"], op="LeakyRelu")}


# -- -o's extension names the format ----------------------------------------------------------------------------


def test_scan_output_format_follows_the_extension_unless_format_says(files: dict[str, Path]) -> None:
    folder, model, data = files["folder"], files["small"], files["data"]
    for name, check in [("r.json", lambda t: json.loads(t)["schema"] == "relu-doctor/report/v1"),
                        ("r.md", lambda t: t.startswith("### relu-doctor:")),
                        ("r.csv", lambda t: next(csv.reader([t.splitlines()[0]]))[:2] == ["index", "name"]),
                        ("r.txt", lambda t: t.startswith("#  site"))]:
        result = run("scan", model, "--data", data, "-o", folder / name)
        assert result.exit_code == 0 and result.stdout == "", result.output
        assert check((folder / name).read_text()), name
    assert run("scan", model, "--data", data, "-o", folder / "t.json", "-f", "table").exit_code == 0
    assert (folder / "t.json").read_text().startswith("#  site")  # --format wins
    base = folder / "r.json"
    assert run("diff", base, base, "-o", folder / "d.md").exit_code == 0
    assert (folder / "d.md").read_text().startswith("### relu-doctor diff")
    refused = run("diff", base, base, "-o", folder / "d.csv")
    assert refused.exit_code == 2 and "names csv" in refused.stderr and not (folder / "d.csv").exists()
    assert run("merge", base, "-o", folder / "m.md").exit_code == 0
    assert (folder / "m.md").read_text().startswith("### relu-doctor:")


# -- the table ------------------------------------------------------------------------------------------------------


def _rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if re.match(r"\s*\d+\s", line)]


@pytest.mark.parametrize("columns", [80, 200])
def test_table_names_tell_sites_apart_at_any_width(files: dict[str, Path], columns: int) -> None:
    result = run("scan", files["dense"], "--data", files["data"], columns=columns)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= columns
    assert lines[0].split() == ["#", "site", "kind", "neurons", "dead", "dead", "%", "sparsity", "dormant"]
    names = [row.split()[1] for row in _rows(result.stdout)]
    assert len(names) == len(DENSE) == len(set(names))  # no two sites read the same
    if columns == 200:
        assert names == DENSE  # the terminal's width is used: whole names
    else:
        assert all(n.endswith(full.rsplit(".", 1)[1]) for n, full in zip(names, DENSE))  # the end is kept
        assert "…" in names[0] and "block1" in names[0] and "layer1" in names[0]  # and the distinguishing middle
    assert not any(line.strip() == "0." for line in lines)  # the legend never wraps a lone "0."
    report = files["folder"] / f"dense{columns}.json"
    assert run("scan", files["dense"], "--data", files["data"], "-o", report).exit_code == 0
    diff = run("diff", report, report, columns=columns).stdout.splitlines()
    shown = [line.split()[0] for line in diff[1:len(DENSE) + 1]]
    assert len(set(shown)) == len(DENSE) and max(map(len, diff)) <= columns  # the diff's table too


def test_top_and_only_dead_choose_the_rows(files: dict[str, Path]) -> None:
    model, data = files["small"], files["data"]
    only = run("scan", model, "--data", data, "--only-dead")
    assert [r.split()[1] for r in _rows(only.stdout)] == ["b", "c"]  # site a has no dead neuron
    assert "Showing 2 of 3 sites (--only-dead)." in only.stdout
    top = run("scan", model, "--data", data, "--top", "1")
    assert [r.split()[1] for r in _rows(top.stdout)] == ["b"]  # most dead first, ties in execution order
    full = json.loads(run("scan", model, "--data", data, "--top", "1", "-f", "json").stdout)
    assert len(full["sites"]) == 3  # the report itself stays whole


def test_a_model_of_leaky_sites_only_says_so(files: dict[str, Path]) -> None:
    result = run("scan", files["leaky"], "--data", files["data"])
    assert result.exit_code == 0 and "Dead: 0 of 0" not in result.stdout
    flowing = " ".join(result.stdout.split())
    assert "no ReLU-type site (every site is a leaky kind); 1 of 8 leaky neurons never > 0" in flowing
    md = run("scan", files["leaky"], "--data", files["data"], "-f", "markdown").stdout
    assert md.startswith("### relu-doctor: no ReLU-type site (2 sites of leaky kinds, 1 dead neurons)")


# -- gates on shards ------------------------------------------------------------------------------------------------


def test_shards_record_gates_and_merge_judges_the_whole(files: dict[str, Path]) -> None:
    folder, model, data = files["folder"], files["small"], files["data"]
    parts = []
    for i in range(2):  # every site but a has 1 of 4 neurons dead: 25% > 0.2 fails the whole
        part = folder / f"part{i}.json"
        result = run("scan", model, "--data", data, "--shard", f"{i}/2", "--fail-dead-ratio", "0.2", "-o", part)
        assert result.exit_code == 0, result.output  # a shard is not judged alone
        assert "gates are recorded in the report, not judged" in result.stderr
        saved = json.loads(part.read_text())["gates"]
        assert saved["checked"] == {"fail_dead_ratio": 0.2} and saved["violations"] == []
        parts.append(part)
    recorded = run("merge", *parts, "-o", folder / "whole.json")
    assert recorded.exit_code == 1 and "site b: dead ratio 25.0% > 20.0%" in recorded.stderr
    relaxed = run("merge", *parts, "--fail-dead-ratio", "0.3", "-o", folder / "whole2.json")
    assert relaxed.exit_code == 0, relaxed.output
    assert json.loads((folder / "whole2.json").read_text())["gates"]["checked"] == {"fail_dead_ratio": 0.3}
    other = folder / "other.json"  # scanned with different gates: merged, judged by the strictest
    assert run("scan", model, "--data", data, "--shard", "1/2", "-o", other).exit_code == 0
    mixed = run("merge", parts[0], other, "-f", "table")
    assert mixed.exit_code == 1 and "different gates" in mixed.stderr


# -- help -----------------------------------------------------------------------------------------------------------


def test_help_reads_like_help() -> None:
    top = run("--help").stdout
    assert "..." not in top.split("Commands:")[1]  # summaries are whole sentences
    for command in ("scan", "patch", "prune", "diff", "merge", "timeline"):
        text = run(command, "--help").stdout
        usage = text.splitlines()[0]
        assert "{" not in usage and "<" not in text.split("Options:")[0], usage  # MODEL, not {MODEL} <path>
        assert "Examples:" in text and f"relu-doctor {command} " in text.split("Examples:")[1]
    scan = run("scan", "--help").stdout
    assert "Usage: relu-doctor scan [OPTIONS] MODEL" in scan
    assert re.search(r"folder of\s+images", scan)  # --data takes image folders too
    for flag in ("--input-shape", "--select", "--ignore"):
        assert re.search(re.escape(flag) + r"[^\n]*\n?[^-]*Repeatable", scan), flag
    assert "REPORT.json..." in run("merge", "--help").stdout and "list[Path]" not in run("merge", "--help").stdout
    assert re.search(r"required\s+unless\s+--dry-run", run("patch", "--help").stdout)


# -- patch: OUT's extension names the format --------------------------------------------------------------------


def test_patch_writes_the_format_outs_extension_names(files: dict[str, Path]) -> None:
    folder, model, data = files["folder"], files["small"], files["data"]
    refused = run("patch", model, "--data", data, "-o", folder / "p.pt2")  # ONNX in, .pt2 out: no such conversion
    assert refused.exit_code == 2 and "converts eager models only; an ONNX model is written as ONNX" in refused.stderr
    clash = run("patch", model, "--data", data, "--to", "torchscript", "-o", folder / "p.onnx")
    assert clash.exit_code == 2 and "--to torchscript contradicts -o" in clash.stderr
    state = run("patch", model, "--data", data, "-o", folder / "p.safetensors")
    assert state.exit_code == 2 and "state dict" in state.stderr
    assert not list(folder.glob("p.*"))
    done = run("patch", model, "--data", data, "-o", folder / "p.onnx")
    assert done.exit_code == 0, done.output
    assert onnx.load(str(folder / "p.onnx")).graph.node  # ONNX, reloaded
    assert max(map(len, done.stdout.splitlines())) <= 80  # the Cost line wraps like the rest
