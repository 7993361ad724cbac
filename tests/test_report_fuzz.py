"""Tampered reports fed to `diff`, `merge` and `patch --report`: each run ends in exit 0 or 2
(1 only where a gate the report carries legitimately fails), never 3, and a merge that
succeeds writes a report whose counts are consistent (it passes the same check).

The reports start as a real scan of a small ONNX model (a Relu and a Clip(0, 6) site, one
planted dead channel), then one field is changed: a type, a range, a count that contradicts
another, a kind, a nesting depth.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.validate import check_report
from tests.test_onnx_instrument import two_convs


def _model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Clip(0, 6), channel 3 planted dead, a typed output (a file
    relu-doctor's loader accepts)."""
    m = two_convs(8)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8, 8, 8]))
    return m

SAMPLE = ["--samples", "12", "--batch-size", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("fuzz")
    model = folder / "m.onnx"
    onnx.save(_model(), str(model))
    result = CliRunner().invoke(app, ["scan", str(model), *SAMPLE, "-f", "json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["kind"] for s in report["sites"]] == ["relu", "relu6"] and report["sites"][0]["dead"] > 0
    return model, report


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


DELETE = object()  # a value that removes the key (or list item)


def _set(d: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


ODD_VALUES = st.sampled_from([
    -1, 0, 1, 7, 2**53 + 1, 10**30, -0.5, 0.5, 1e308, float("nan"), float("inf"), True, None, "", "relu6",
    "x" * 300, [], [0], [1, 1], {}, {"a": 1}, "clip", "leaky_relu", DELETE,
])


def _targeted(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """Changes a hand-edited report might make; each breaks a consistency rule of validate.py."""
    s0 = report["sites"][0]
    c0 = s0["counters"]
    return [
        ("fires above rows", ("sites", 0, "counters", "fires", 0), c0["rows"] + 1),
        ("sample_fires above samples", ("sites", 0, "counters", "sample_fires", 1), c0["samples"] + 1),
        ("a dead neuron revived in the counters only", ("sites", 0, "dead_indices"), []),
        ("dead_indices unsorted", ("sites", 0, "dead_indices"), list(reversed(range(3)))),
        ("dead_indices out of range", ("sites", 0, "dead_indices"), [99]),
        ("dead above neurons", ("sites", 0, "dead"), s0["neurons"] + 1),
        ("relu called relu6", ("sites", 0, "kind"), "relu6"),
        ("relu6 called relu", ("sites", 1, "kind"), "relu"),
        ("relu called leaky", ("sites", 0, "kind"), "leaky_relu"),
        ("clip bound changed", ("sites", 1, "params"), {"max": 3.0}),
        ("relu6 called clip", ("sites", 1, "kind"), "clip"),
        ("neurons changed", ("sites", 0, "neurons"), s0["neurons"] - 1),
        ("one neuron dropped", ("sites", 0, "counters", "fires"), c0["fires"][:-1]),
        # consistent in itself (shape is 8x8x8): only the model, or the other part, shows the lie
        ("axis moved", ("sites", 0, "axis"), 2),
        ("site renamed", ("sites", 1, "name"), s0["name"]),
        ("a site dropped", ("sites",), [s0]),
        ("negative rows", ("sites", 0, "counters", "rows"), -4),
        ("huge rows", ("sites", 0, "counters", "rows"), 10**40),
        ("summary dead", ("summary", "dead"), 0),
        ("tau out of range", ("settings", "tau"), 5),
        ("min of a relu", ("sites", 0, "counters", "min"), [0.0] * s0["neurons"]),
        ("no min for a relu6", ("sites", 1, "counters", "min"), None),
        ("abs_sum of a dead relu neuron", ("sites", 0, "counters", "abs_sum", s0["dead_indices"][0]), 5.0),
        ("float count", ("sites", 0, "counters", "fires", 0), 1.5),
        ("samples as text", ("sample", "samples"), "12"),
        ("bad gate", ("gates", "checked"), {"fail_dead_ratio": 25}),
        ("shard out of range", ("sample", "shard"), "3/2"),
        ("sha256 not hex", ("model", "sha256"), "zz"),
        ("a kind that is a list", ("sites", 0, "kind"), []),  # found by the random test: was exit 3
        ("counters removed", ("sites", 1, "counters"), DELETE),
        ("summary sparsity", ("summary", "sparsity"), 0.5),
        ("a site's dead_ratio", ("sites", 0, "dead_ratio"), 0.0),
    ]


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def _check_all_commands(model: Path, good: dict[str, Any], text: str, folder: Path) -> list[int]:
    bad, good_path = folder / "bad.json", folder / "good.json"
    bad.write_text(text)
    good_path.write_text(json.dumps(good))
    codes = []
    d = _run(["diff", str(good_path), str(bad), "-f", "json"])
    codes.append(d.exit_code)
    merged = folder / "merged.json"
    m = _run(["merge", str(bad), str(good_path), "-o", str(merged), "-q"])
    codes.append(m.exit_code)
    if m.exit_code in (0, 1):  # a merged report was written: it must be a consistent one
        check_report(json.loads(merged.read_text()), "the merged report")
    out = folder / "out.onnx"
    p = _run(["patch", str(model), "--report", str(bad), *SAMPLE, "-o", str(out), "--force"])
    codes.append(p.exit_code)
    for result in (d, m, p):
        assert result.exit_code in (0, 1, 2), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert 1 <= len(result.stderr.strip().splitlines()) <= 3, result.stderr
    return codes


QUICK = {0, 3, 6, 12, 14, 17, 19, 22, 28, 30}  # one of each family; the slow tier runs every case


@pytest.mark.parametrize("index", [i if i in QUICK else pytest.param(i, marks=pytest.mark.slow) for i in range(32)])
def test_each_targeted_tampering_is_refused_by_every_command(base: tuple[Path, dict], index: int,
                                                             tmp_path: Path) -> None:
    model, report = base
    name, path, value = _targeted(report)[index]
    bad = _set(copy.deepcopy(report), path, value)
    codes = _check_all_commands(model, report, json.dumps(bad), tmp_path)
    # diff reads one report alone: it may accept a lie that is consistent in itself
    assert codes == ([0, 2, 2] if name == "axis moved" else [2, 2, 2]), name


def test_deep_nesting_and_non_json_numbers_are_exit_2(base: tuple[Path, dict], tmp_path: Path) -> None:
    model, report = base
    text = json.dumps(report)
    deep = text.replace('"gates": {', '"gates": ' + "[" * 100_000 + "]" * 100_000 + ', "x": {', 1)
    nan = text.replace('"rows": ', '"rows": NaN, "r": ', 1)
    inf = text.replace('"total": ', '"total": 1e999, "t": ', 1)
    for bad in (deep, nan, inf, "[" * 100_000 + "]" * 100_000):
        assert _check_all_commands(model, report, bad, tmp_path) == [2, 2, 2]


def test_the_untampered_report_is_accepted_by_every_command(base: tuple[Path, dict], tmp_path: Path) -> None:
    model, report = base
    assert _check_all_commands(model, report, json.dumps(report), tmp_path) == [0, 0, 0]


def test_a_consistent_report_that_calls_a_relu_relu6_is_refused_by_patch(base: tuple[Path, dict],
                                                                         tmp_path: Path) -> None:
    """Issue 12's case: the lie passes every check a report can make on itself (a relu6 with a
    per-neuron minimum of 0 saturates nothing), so only the model can refute it."""
    model, report = base
    bad = copy.deepcopy(report)
    bad["sites"][0]["kind"] = "relu6"
    bad["sites"][0]["counters"]["min"] = [0.0] * bad["sites"][0]["neurons"]
    check_report(bad)  # consistent in itself
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = tmp_path / "out.onnx"
    result = _run(["patch", str(model), "--report", str(tmp_path / "bad.json"), *SAMPLE, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "says site 'r' is relu6" in result.stderr and "in the model it is relu," in result.stderr
    assert not out.exists()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_field_changes_never_crash_nor_merge_inconsistently(base: tuple[Path, dict],
                                                                   data: st.DataObject) -> None:
    model, report = base
    paths = list(_paths(report))
    path = data.draw(st.sampled_from(paths[1:]), label="path")
    value = data.draw(ODD_VALUES, label="value")
    bad = _set(copy.deepcopy(report), path, value)
    with tempfile.TemporaryDirectory() as folder:
        _check_all_commands(model, report, json.dumps(bad), Path(folder))


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_field_changes_many(base: tuple[Path, dict], data: st.DataObject) -> None:
    test_random_field_changes_never_crash_nor_merge_inconsistently.hypothesis.inner_test(base, data)  # type: ignore[attr-defined]
