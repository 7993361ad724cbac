"""`diff` reports exactly a planted change; `merge` of three shards equals the scan of the whole.

The model: conv -> BN -> ReLU (8 ch) -> conv -> BN -> ReLU (8 ch) -> pool -> linear -> ReLU6 (6).
A BN channel with weight 0 and bias -1 outputs -1: that ReLU neuron is dead on every input.
The "new" model plants more dead channels than the "base" one, and every channel that is dead
in either model has its outgoing weights cut in both, so all other neurons compute exactly the
same in both models: the diff must be the planted neurons and nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.compare import diff
from relu_doctor.errors import UserError
from relu_doctor.merge import merge_reports
from relu_doctor.report import Report, Site
from relu_doctor.stats import SiteCounters

BASE_DEAD = ((1, 5), (2,))
NEW_DEAD = ((1, 3, 5), (0, 2, 4))  # planted on top: site relu1 +{3} (+12.5 pp), relu2 +{0, 4} (+25 pp)


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.fc, self.act = nn.Linear(8, 6), nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.act(self.fc(x.mean(dim=(2, 3))))


def planted(dead: tuple[tuple[int, ...], tuple[int, ...]]) -> nn.Module:
    torch.manual_seed(0)
    m = TwoBlocks()
    with torch.no_grad():
        for bn, channels in zip((m.bn1, m.bn2), dead, strict=True):
            bn.running_mean.zero_()  # type: ignore[union-attr]
            bn.running_var.fill_(1.0)  # type: ignore[union-attr]
            bn.weight.fill_(1.0)
            bn.bias.fill_(0.2)
            bn.weight[list(channels)] = 0.0
            bn.bias[list(channels)] = -1.0
        # Channels dead in either model feed nothing forward, so live neurons match across models.
        m.conv2.weight[:, list(set(BASE_DEAD[0]) | set(NEW_DEAD[0]))] = 0.0
        m.fc.weight[:, list(set(BASE_DEAD[1]) | set(NEW_DEAD[1]))] = 0.0
        m.fc.bias.fill_(0.5)
    return m.eval()


def run(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base.pt / new.pt (TorchScript), data.npy (48 samples) and its three shards, base.json / new.json."""
    folder = tmp_path_factory.mktemp("diff")
    f = {"folder": folder}
    for name, dead in (("base", BASE_DEAD), ("new", NEW_DEAD)):
        f[name] = folder / f"{name}.pt"
        torch.jit.trace(planted(dead), torch.zeros(1, 3, 6, 6)).save(str(f[name]))
    data = np.random.default_rng(0).standard_normal((48, 3, 6, 6), dtype=np.float32)
    f["data"] = folder / "data.npy"
    np.save(f["data"], data)
    for i, part in enumerate(np.array_split(data, 3)):
        f[f"shard{i}"] = folder / f"shard{i}.npy"
        np.save(f[f"shard{i}"], part)
    for name in ("base", "new"):
        f[f"{name}.json"] = folder / f"{name}.json"
        result = run("scan", f[name], "--data", f["data"], "--format", "json", "-o", f[f"{name}.json"])
        assert result.exit_code == 0, result.output
    return f


# -- diff ----------------------------------------------------------------------------------------------------------


def test_diff_reports_exactly_the_planted_change(files: dict[str, Path]) -> None:
    result = run("diff", files["base.json"], files["new.json"], "--format", "json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    base, new = (json.loads(files[f"{n}.json"].read_text()) for n in ("base", "new"))
    assert [s["dead_indices"] for s in base["sites"][:2]] == [list(x) for x in BASE_DEAD]  # sanity: as built
    assert d["schema"] == "relu-doctor/diff/v1" and d["added"] == [] and d["removed"] == []
    by_name = {s["name"]: s for s in d["sites"]}
    assert list(by_name) == ["relu1", "relu2", "act"]
    r1, r2, act = by_name["relu1"], by_name["relu2"], by_name["act"]
    assert (r1["newly_dead"], r1["revived"], r1["dead_base"], r1["dead"], r1["dead_pp"]) == ([3], [], 2, 3, 12.5)
    assert (r2["newly_dead"], r2["revived"], r2["dead_base"], r2["dead"], r2["dead_pp"]) == ([0, 4], [], 1, 3, 25.0)
    assert (act["newly_dead"], act["dead_pp"], act["sparsity_pp"]) == ([], 0.0, 0.0)  # untouched downstream
    # Sparsity rises by exactly the entries the planted neurons used to fire on.
    for i, site in enumerate(base["sites"][:2]):
        counters = site["counters"]
        entries = counters["rows"] * site["neurons"]
        lost = sum(counters["fires"][j] for j in set(NEW_DEAD[i]) - set(BASE_DEAD[i]))
        assert math.isclose(d["sites"][i]["sparsity_pp"], 100 * lost / entries, abs_tol=1e-6)
    for s, b, n in zip(d["sites"], base["sites"], new["sites"], strict=True):
        assert (s["dormant_base"], s["dormant"]) == (b["dormant"], n["dormant"])
    # 3 of the 8 + 8 + 6 grad-blocked neurons planted (relu6 counts too)
    assert (d["summary"]["dead_base"], d["summary"]["dead"]) == (3, 6)
    assert math.isclose(d["summary"]["dead_pp"], 100 * 3 / 22, abs_tol=1e-6)
    assert d["warnings"] == []  # same sample, same settings


@pytest.mark.parametrize(
    ("pp", "code", "offending"),
    [("25", 0, []), ("24.9", 1, ["relu2"]), ("12.5", 1, ["relu2"]), ("12.4", 1, ["relu1", "relu2"]),
     ("0", 1, ["relu1", "relu2"])],
)
def test_fail_increase_boundary(files: dict[str, Path], pp: str, code: int, offending: list[str]) -> None:
    result = run("diff", files["base.json"], files["new.json"], "--fail-increase", pp, "--format", "json")
    assert result.exit_code == code, result.output
    gate = json.loads(result.stdout)["gate"]
    assert [v["site"] for v in gate["violations"]] == offending and gate["passed"] == (code == 0)
    for site in offending:
        assert f"site {site}: dead ratio" in result.stderr


def test_fail_increase_counts_selected_sites_and_improvement_passes(files: dict[str, Path]) -> None:
    ignored = run("diff", files["base.json"], files["new.json"], "--fail-increase", "0", "--ignore", "relu*")
    assert ignored.exit_code == 0
    typo = run("diff", files["base.json"], files["new.json"], "--fail-increase", "0", "--select", "rleu*")
    assert typo.exit_code == 2 and "matches none of the 3 sites" in typo.stderr
    assert run("diff", files["new.json"], files["base.json"], "--fail-increase", "0").exit_code == 0  # revived


def test_diff_table_and_markdown(files: dict[str, Path], tmp_path: Path) -> None:
    table = run("diff", files["base.json"], files["new.json"], "--fail-increase", "20")
    assert table.exit_code == 1
    lines = table.stdout.splitlines()
    assert any(line.split()[:4] == ["relu2", "1→3", "12.5→37.5%", "+25.0"] for line in lines)
    assert "Gate: FAILED, 1 site(s) grew by more than 20 pp" in table.stdout
    out = tmp_path / "diff.md"
    md = run("diff", files["base.json"], files["new.json"], "--fail-increase", "20", "--format", "markdown", "-o", out)
    assert md.exit_code == 1 and md.stdout == ""
    text = out.read_text()
    assert text.startswith("### relu-doctor diff: 3→6 dead ReLU neurons (13.6→27.3%, +13.6 pp)")
    assert "| `relu2` | relu | 1→3 | 12.5→37.5% | +25.0 ❌ |" in text
    assert "<details><summary>New report</summary>" in text


def test_scan_with_baseline(files: dict[str, Path], tmp_path: Path) -> None:
    as_json = run("scan", files["new"], "--data", files["data"], "--format", "json",
                  "--baseline", files["base.json"], "--fail-increase", "20")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["summary"]["dead"] == 6  # stdout: the report alone
    assert "12.5→37.5%" in as_json.stderr and "site relu2: dead ratio 12.5% -> 37.5%" in as_json.stderr
    md = run("scan", files["new"], "--data", files["data"], "--format", "markdown", "--baseline", files["base.json"])
    assert md.exit_code == 0
    assert md.stdout.startswith("### relu-doctor: 6 dead") and "\n### relu-doctor diff: 3→6 dead" in md.stdout
    out = tmp_path / "t.txt"
    table = run("scan", files["new"], "--data", files["data"], "-o", out, "--baseline", files["base.json"],
                "--fail-increase", "25")
    assert table.exit_code == 0 and "Gate: passed" in out.read_text() and "relu2" in out.read_text()
    missing = run("scan", files["new"], "--data", files["data"], "--baseline", tmp_path / "nope.json")
    assert missing.exit_code == 2 and "report not found" in missing.stderr


def test_diff_user_errors(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/else"}')
    for args in ([bad, files["new.json"]], [files["base.json"], tmp_path / "missing.json"],
                 [files["base.json"], files["new.json"], "--fail-increase", "-1"]):
        result = run("diff", *args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) <= 2


# -- diff on reports built from counters: added, removed, changed kind ----------------------------------------------


def report_of(sites: list[tuple[str, str, int]], neurons: int = 4, sha: str = "a" * 64, **sample: Any) -> Report:
    """Sites (name, kind, dead) on a 10-row sample; dead neurons come first."""
    built = []
    for i, (name, kind, dead) in enumerate(sites):
        fires = np.array([0] * dead + [2] * (neurons - dead))
        counters = SiteCounters(neurons, rows=10, samples=10, fires=fires, sample_fires=np.minimum(fires, 1),
                                abs_sum=fires * 1.0, total=float(fires.sum()), max=1.0)
        params = {"negative_slope": 0.01} if kind == "leaky_relu" else {}
        built.append(Site(i, name, kind, "op", params, [neurons], 1, counters))
    return Report(model={"path": "m", "format": "onnx", "sha256": sha},
                  sample={"source": "x.npy", "samples": 10, "batch_size": 32, "seed": None, "inputs": [], **sample},
                  settings={"tau": 0.025, "neuron_axis": "auto", "include_smooth": False}, sites=built)


def test_added_removed_and_rekinded_sites() -> None:
    base = report_of([("a", "relu", 1), ("b", "relu", 0), ("gone", "relu", 2)])
    new = report_of([("a", "leaky_relu", 1), ("b", "relu", 4), ("fresh", "relu", 4)])
    d = diff(base, new, fail_increase=10)
    assert [s.name for s in d.added] == ["fresh"] and [s.name for s in d.removed] == ["gone"]
    a, b = d.sites
    assert a.kind_base == "relu" and a.kind == "leaky_relu" and a.changed and not a.grad_blocked
    assert [v.site for v in d.violations] == ["b"]  # added sites have no baseline; leaky ones never count
    assert d.to_dict()["added"][0] == {"name": "fresh", "kind": "relu", "grad_blocked": True, "neurons": 4,
                                       "dead": 4, "dead_ratio": 1.0}


def test_diff_warns_about_different_samples_and_refuses_duplicate_names() -> None:
    d = diff(report_of([("a", "relu", 1)]), report_of([("a", "relu", 1)], samples=20))
    assert d.warnings and "different samples" in d.warnings[0]
    with pytest.raises(UserError, match="two sites named 'a'"):
        diff(report_of([("a", "relu", 1), ("a", "relu", 1)]), report_of([("a", "relu", 1)]))


def test_float_noise_at_the_boundary_does_not_fail() -> None:
    # 3/10 -> 4/10 is 100 * (0.4 - 0.3) = 10.000000000000004 pp in floats: exactly 10 pp must pass.
    d = diff(report_of([("a", "relu", 3)], neurons=10), report_of([("a", "relu", 4)], neurons=10), fail_increase=10)
    assert d.passed and d.sites[0].dead_pp > 10


# -- merge ---------------------------------------------------------------------------------------------------------

# Provenance that differs by construction between the shards' merge and one whole scan:
# sample.source names the data file (three shard files vs one), and sample.merged_from is
# added by merge to list the parts. Everything else must agree.
PROVENANCE = {("sample", "source"), ("sample", "merged_from")}


def assert_same(merged: Any, whole: Any, path: tuple[Any, ...] = ()) -> None:
    """Key by key; floats to 1e-12 relative (shards add the same batch sums in another order)."""
    if isinstance(whole, dict):
        keys = (set(merged) | set(whole)) - {k for k in set(merged) | set(whole) if path + (k,) in PROVENANCE}
        for k in keys:
            assert k in merged and k in whole, f"{path + (k,)} missing on one side"
            assert_same(merged[k], whole[k], path + (k,))
    elif isinstance(whole, list):
        assert isinstance(merged, list) and len(merged) == len(whole), path
        for i, (m, w) in enumerate(zip(merged, whole, strict=True)):
            assert_same(m, w, path + (i,))
    elif isinstance(whole, float) and not isinstance(merged, bool):
        assert math.isclose(merged, whole, rel_tol=1e-12, abs_tol=1e-12), (path, merged, whole)
    else:
        assert merged == whole, (path, merged, whole)


def test_merge_of_three_shards_equals_the_whole_scan(files: dict[str, Path]) -> None:
    folder, gate = files["folder"], ["--fail-dead-ratio", "0.3"]  # gated, to check it is redone on the whole
    whole = folder / "whole.json"
    assert run("scan", files["new"], "--data", files["data"], "--format", "json", "-o", whole, *gate).exit_code == 1
    parts = []
    for i in range(3):
        parts.append(folder / f"part{i}.json")
        result = run("scan", files["new"], "--data", files[f"shard{i}"], "--format", "json", "-o", parts[i], *gate)
        assert result.exit_code == 1, result.output
    merged_path = folder / "merged.json"
    result = run("merge", *parts, "-o", merged_path)
    assert result.exit_code == 1  # the recorded gate, evaluated again on the whole sample, fails
    assert "site relu2: dead ratio 37.5% > 30.0%" in result.stderr
    merged, expected = json.loads(merged_path.read_text()), json.loads(whole.read_text())
    assert merged["sample"]["samples"] == 48 and [p["samples"] for p in merged["sample"]["merged_from"]] == [16] * 3
    assert merged["sample"]["source"] == "merged"
    assert merged["warnings"] == expected["warnings"]  # the small-sample warning is for 48, not 16
    assert_same(merged, expected)
    # Integer counters are exact, not just close.
    for m, w in zip(merged["sites"], expected["sites"], strict=True):
        for key in ("rows", "samples", "fires", "sample_fires", "nonfinite"):
            assert m["counters"][key] == w["counters"][key]


def test_merge_refuses_different_models_and_sites(files: dict[str, Path], tmp_path: Path) -> None:
    base, new = files["base.json"], files["new.json"]
    different = run("merge", base, new)
    assert different.exit_code == 2 and "scans of different models" in different.stderr
    assert len(different.stderr.strip().splitlines()) <= 2
    twice = run("merge", new, new)
    assert twice.exit_code == 2 and "given twice" in twice.stderr
    renamed = json.loads(new.read_text())
    renamed["sites"][1]["name"] = "other"
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    sites = run("merge", new, tmp_path / "renamed.json")
    assert sites.exit_code == 2 and "site 1 differs" in sites.stderr
    assert not list(tmp_path.glob("*.tmp")) and run("merge", tmp_path / "nope.json").exit_code == 2


def test_merge_checks_settings_and_warns_about_a_sample_counted_twice() -> None:
    a = report_of([("a", "relu", 1)])
    merged = merge_reports([a, report_of([("a", "relu", 1)])], ["a.json", "b.json"])
    assert merged.sample["samples"] == 20 and merged.site("a").counters.rows == 20
    assert any("identical counters" in w for w in merged.warnings)
    other_tau = report_of([("a", "relu", 1)])
    other_tau.settings.tau = 0.1
    with pytest.raises(UserError, match="different tau"):
        merge_reports([a, other_tau])
    gated = report_of([("a", "relu", 1)])
    gated.gates.checked = {"fail_dead_ratio": 0.5}
    # parts scanned with different gates merge (issue 15); the whole is judged by the strictest recorded gate
    mixed = merge_reports([a, gated])
    assert mixed.gates.checked == {"fail_dead_ratio": 0.5}
    assert any("different gates" in w for w in mixed.warnings)
    with pytest.raises(UserError, match="sites"):
        merge_reports([a, report_of([("a", "relu", 1), ("b", "relu", 0)])])


def test_merge_of_scan_shards_equals_the_whole_scan(files: dict[str, Path]) -> None:
    folder = files["folder"]
    whole = folder / "whole-shard.json"
    assert run("scan", files["new"], "--data", files["data"], "--format", "json", "-o", whole).exit_code == 0
    parts = [folder / f"s{i}.json" for i in range(3)]
    for i, part in enumerate(parts):
        result = run("scan", files["new"], "--data", files["data"], "--shard", f"{i}/3", "-f", "json", "-o", part)
        assert result.exit_code == 0, result.output
    merged = json.loads(run("merge", *parts).stdout)
    expected = json.loads(whole.read_text())
    assert merged["sample"]["source"] == expected["sample"]["source"]  # one data file: the source is kept
    assert "shard" not in merged["sample"] and "of_samples" not in merged["sample"]
    assert_same(merged, expected)
    again = folder / "s1-again.json"  # another file, the same shard
    again.write_bytes(parts[1].read_bytes())
    twice = run("merge", parts[0], parts[1], again)
    assert twice.exit_code == 2 and "both shard 1/3" in twice.stderr
    partial = run("merge", parts[0], parts[2])
    assert partial.exit_code == 0 and "shards 1/3 are missing" in partial.stderr
