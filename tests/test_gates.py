"""CI gates: thresholds on both sides of the boundary, leaky sites, --select/--ignore, exit codes.

The CLI cases scan the catalogue's `reused_relu` model (planted dead: 2/8, 3/8, 2/8 in
sites relu, relu#2, relu#3, so 7/24 overall) and `leaky` (dead neurons in leaky sites only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from relu_doctor import gates
from relu_doctor.cli import app
from relu_doctor.errors import UserError
from relu_doctor.report import Site
from relu_doctor.stats import SiteCounters
from tests.models import case, sample_data


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


def make_site(name: str, dead: int, neurons: int = 8, kind: str = "relu", index: int = 0) -> Site:
    """A site whose first `dead` neurons never fired on a 10-row sample."""
    fires = np.array([0] * dead + [5] * (neurons - dead))
    params = {"negative_slope": 0.01} if kind == "leaky_relu" else {}
    counters = SiteCounters(neurons, rows=10, samples=10, fires=fires, sample_fires=np.minimum(fires, 1),
                            abs_sum=fires.astype(float))
    return Site(index, name, kind, "nn.ReLU", params, [neurons], 1, counters)


# -- the gate logic, on sites built from counters -------------------------------------------------------------------


def test_dead_ratio_equal_to_the_limit_passes_and_above_it_fails() -> None:
    sites = [make_site("a", 2), make_site("b", 3)]  # 0.25 and 0.375
    assert gates.evaluate(sites, fail_dead_ratio=0.375).passed
    g = gates.evaluate(sites, fail_dead_ratio=0.25)
    assert not g.passed and [(v.site, v.value) for v in g.violations] == [("b", 0.375)]
    assert [v.site for v in gates.evaluate(sites, fail_dead_ratio=0.2).violations] == ["a", "b"]
    assert gates.evaluate(sites, fail_dead_ratio=0.25).checked == {"fail_dead_ratio": 0.25}


def test_total_dead_ratio_counts_grad_blocked_neurons_only() -> None:
    sites = [make_site("a", 2), make_site("b", 3), make_site("leaky", 8, kind="leaky_relu")]
    assert gates.evaluate(sites, fail_total_dead_ratio=5 / 16).passed  # 5 of 16 relu neurons: equal passes
    g = gates.evaluate(sites, fail_total_dead_ratio=0.3)
    assert [(v.gate, v.site, v.value) for v in g.violations] == [("fail_total_dead_ratio", None, 5 / 16)]


def test_leaky_sites_never_trip_even_when_all_dead() -> None:
    sites = [make_site("leaky", 8, kind="leaky_relu"), make_site("ok", 0)]
    assert gates.evaluate(sites, fail_dead_ratio=0.0, fail_total_dead_ratio=0.0).passed


@given(dead=st.integers(0, 8), limit=st.integers(0, 8))
def test_a_site_trips_exactly_when_its_dead_count_is_above_the_limit(dead: int, limit: int) -> None:
    g = gates.evaluate([make_site("s", dead)], fail_dead_ratio=limit / 8)
    assert g.passed == (dead <= limit)


def test_select_and_ignore_globs() -> None:
    sites = [make_site("layer1.relu", 4), make_site("layer2.relu", 1), make_site("head.relu", 8)]
    names = [s.name for s in gates.selected(sites, select=["layer*"])]
    assert names == ["layer1.relu", "layer2.relu"]
    assert [s.name for s in gates.selected(sites, ignore=["head.*", "layer1.*"])] == ["layer2.relu"]
    assert gates.selected(sites, select=["layer?.relu"], ignore=["layer1.relu"])[0].name == "layer2.relu"
    assert gates.unmatched(sites, ["layer*", "typo*"]) == ["typo*"]


@pytest.mark.parametrize("bad", [25.0, -0.1, 1.5, float("nan")])
def test_a_ratio_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(UserError, match="fraction between 0 and 1"):
        gates.evaluate([make_site("a", 1)], fail_dead_ratio=bad)


def test_a_select_that_matches_nothing_is_refused_when_a_gate_is_set() -> None:
    sites = [make_site("a", 4)]
    assert not gates.gate(sites, fail_dead_ratio=0.25).passed
    assert gates.gate(sites, select=["b*"]).passed  # no gate set: nothing to miscount
    assert not gates.gate(sites, select=["b*", "a"], fail_dead_ratio=0.25).passed  # one glob matches: fine
    with pytest.raises(UserError, match="matches none"):
        gates.gate(sites, select=["b*"], fail_dead_ratio=0.25)


def test_regate_uses_recorded_thresholds() -> None:
    sites = [make_site("a", 4), make_site("b", 1)]
    g = gates.regate(sites, (), ["a"], {"fail_dead_ratio": 0.1})
    assert [v.site for v in g.violations] == ["b"] and g.checked == {"fail_dead_ratio": 0.1}
    with pytest.raises(UserError, match="unknown gate"):
        gates.regate(sites, (), (), {"fail_sparsity": 0.5})


# -- the scan command ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gates")
    paths = {}
    for name in ("reused_relu", "leaky"):
        c = case(name)
        paths[name] = folder / f"{name}.pt"
        torch.jit.trace(c.build(), torch.zeros(1, *c.input_shape)).save(str(paths[name]))
        paths[f"{name}.npy"] = folder / f"{name}.npy"
        np.save(paths[f"{name}.npy"], sample_data(c, n=16))
    return paths


def scan(models: dict[str, Path], name: str, *flags: object) -> object:
    return run("scan", models[name], "--data", models[f"{name}.npy"], "--format", "json", *flags)


@pytest.mark.parametrize(
    ("flags", "code", "offending"),
    [
        (["--fail-dead-ratio", "0.375"], 0, []),  # the worst site is exactly at the limit
        (["--fail-dead-ratio", "0.37"], 1, ["relu#2"]),
        (["--fail-dead-ratio", "0.25"], 1, ["relu#2"]),  # relu and relu#3 are at 0.25: they pass
        (["--fail-dead-ratio", "0.24"], 1, ["relu", "relu#2", "relu#3"]),
        (["--fail-total-dead-ratio", repr(7 / 24)], 0, []),
        (["--fail-total-dead-ratio", "0.29"], 1, [None]),
        (["--fail-dead-ratio", "0.3", "--select", "relu"], 0, []),
        (["--fail-dead-ratio", "0.3", "--select", "relu#*"], 1, ["relu#2"]),
        (["--fail-dead-ratio", "0.3", "--ignore", "relu#2"], 0, []),
        (["--fail-dead-ratio", "0.2", "--select", "relu#*", "--ignore", "*#3"], 1, ["relu#2"]),
        ([], 0, []),
    ],
)
def test_scan_exit_code_and_offending_sites(models: dict[str, Path], flags: list[str], code: int,
                                            offending: list[str | None]) -> None:
    result = scan(models, "reused_relu", *flags)
    assert result.exit_code == code, result.output
    report = json.loads(result.stdout)  # stdout is the report alone, gate failed or not
    assert report["gates"]["passed"] == (code == 0)
    assert [v["site"] for v in report["gates"]["violations"]] == offending
    if code:
        assert "gate failed: " in result.stderr
        for site in filter(None, offending):
            assert f"site {site}: dead ratio" in result.stderr
    else:
        assert "gate failed" not in result.stderr


def test_leaky_only_dead_neurons_do_not_trip(models: dict[str, Path]) -> None:
    result = scan(models, "leaky", "--fail-dead-ratio", "0", "--fail-total-dead-ratio", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["summary"]["dead"] == 0 and report["summary"]["dead_all"] == 6  # planted 1 + 2 + 2 + 1


def test_table_lists_the_gate_result(models: dict[str, Path]) -> None:
    passed = run("scan", models["reused_relu"], "--data", models["reused_relu.npy"], "--fail-dead-ratio", "0.5")
    assert passed.exit_code == 0 and "Gates: passed (fail-dead-ratio 0.5)" in passed.stdout
    failed = run("scan", models["reused_relu"], "--data", models["reused_relu.npy"], "--fail-dead-ratio", "0.3")
    assert failed.exit_code == 1 and "Gates: FAILED, 1 violation(s)" in failed.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fail-dead-ratio", "25"], "For 25% pass 0.25"),
        (["--fail-total-dead-ratio", "-1"], "fraction between 0 and 1"),
        (["--fail-increase", "2"], "--fail-increase needs --baseline"),
        (["--fail-dead-ratio", "lots"], "error:"),
    ],
)
def test_wrong_gate_flags_are_user_errors(models: dict[str, Path], flags: list[str], message: str) -> None:
    result = scan(models, "reused_relu", *flags)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2
