"""The data model: one counter schema, typed report parts, coded warnings, and inputs that
scanning never changes (the caller's modules, specs and samples)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import relu_doctor as rd
from relu_doctor import notices
from relu_doctor.input_options import resolve_specs
from relu_doctor.inputs import InputSpec, array_sample, synthetic_sample
from relu_doctor.merge import merge_reports
from relu_doctor.notices import Notice
from relu_doctor.report import Report, Site
from relu_doctor.stats import COUNTER_NAMES, COUNTERS, SiteCounters
from tests.models import case, sample_data

# ---- one schema -------------------------------------------------------------------------


def test_the_schema_lists_exactly_the_fields_of_site_counters() -> None:
    fields = [f.name for f in dataclasses.fields(SiteCounters) if f.name != "neurons"]
    assert fields == list(COUNTER_NAMES)
    assert set(SiteCounters.empty(3, bounded=True, extremes=True).to_dict()) == set(COUNTER_NAMES)
    # on-request fields (neuron_extremes) not measured: absent from the JSON, as before they existed
    assert set(SiteCounters.empty(3, bounded=True).to_dict()) == {f.name for f in COUNTERS if not f.on_request}


def test_merge_follows_each_fields_rule_against_hand_sums() -> None:
    a = SiteCounters(2, rows=4, samples=2, fires=[1, 0], sample_fires=[1, 0], abs_sum=[1.5, 0.0],
                     min=[0.0, 0.0], total=1.5, max=1.5, nonfinite=1)
    b = SiteCounters(2, rows=6, samples=3, fires=[2, 3], sample_fires=[1, 2], abs_sum=[2.0, 4.0],
                     min=[-1.0, 0.5], total=6.0, max=3.0, nonfinite=0)
    m = a.merge(b)
    assert (m.rows, m.samples, m.nonfinite, m.total, m.max) == (10, 5, 1, 7.5, 3.0)
    assert m.fires.tolist() == [3, 3] and m.sample_fires.tolist() == [2, 2] and m.abs_sum.tolist() == [3.5, 4.0]
    assert m.min is not None and m.min.tolist() == [-1.0, 0.0]
    assert m.fires.dtype == np.int64 and m.abs_sum.dtype == np.float64
    empty = SiteCounters.empty(2, bounded=True)  # the identity of every rule
    assert empty.merge(a).to_dict() == a.to_dict()


def test_json_writes_an_empty_extreme_as_null_and_reads_it_back() -> None:
    empty = SiteCounters.empty(2, bounded=True)
    d = empty.to_dict()
    assert d["max"] is None and d["min"] == [None, None]
    back = SiteCounters.from_dict(json.loads(json.dumps(d)))
    assert back.max == float("-inf") and back.min is not None and np.isinf(back.min).all()
    assert SiteCounters.empty(2, bounded=False).to_dict()["min"] is None


def test_every_counter_field_is_a_torchrun_all_reduce_group_member() -> None:
    """distributed.py packs fields by (dtype, merge); an all-reduce on one rank is the identity,
    so the packing must give the counters back unchanged, field by field."""
    torch_dist = pytest.importorskip("torch.distributed")
    if not torch_dist.is_available():
        pytest.skip("torch.distributed is not built in")
    from relu_doctor import distributed

    calls = []
    original, device = torch_dist.all_reduce, distributed._comm_device
    torch_dist.all_reduce = lambda t, op=None: calls.append((t.dtype, op))  # one rank: a no-op
    distributed._comm_device = lambda: torch.device("cpu")  # gloo's; asking needs a process group
    try:
        c = SiteCounters(3, rows=6, samples=2, fires=[1, 0, 6], sample_fires=[1, 0, 2], abs_sum=[1.0, 0.0, 9.0],
                         min=[0.0, 0.0, 1.0], total=10.0, max=4.0, nonfinite=2,
                         neuron_max=[1.0, 0.0, 4.0], neuron_min=[0.0, 0.0, 1.0])
        again = distributed._all_reduce_counters(c)
    finally:
        torch_dist.all_reduce, distributed._comm_device = original, device
    assert again.to_dict() == c.to_dict()
    assert len(calls) == len({(f.dtype, f.merge) for f in COUNTERS})


# ---- the typed report -------------------------------------------------------------------


def _report(samples: int = 10, warnings: list[str] | None = None) -> Report:
    counters = SiteCounters(4, rows=samples, samples=samples, fires=[0, 3, 5, 0], sample_fires=[0, 3, 5, 0],
                            abs_sum=[0.0, 3.0, 5.0, 0.0], total=8.0, max=1.0)
    site = Site(0, "layer.relu", "relu", "nn.ReLU", {}, [4], 1, counters)
    return Report(model={"path": "m.onnx", "format": "onnx", "sha256": "a" * 64},
                  sample={"source": "x.npy", "samples": samples, "batch_size": 5, "seed": None, "inputs": []},
                  settings={"tau": 0.025, "neuron_axis": "auto"}, sites=[site], warnings=warnings or [])


def test_parts_are_typed_and_the_json_keeps_its_shape_and_unknown_keys() -> None:
    d = json.loads(_report().to_json())
    d["model"]["producer"] = "a newer v1 writer"  # v1 may add keys: kept, written back
    d["sample"]["steps"] = [0, 9]
    r = Report.from_dict(d)
    assert r.model.sha256 == "a" * 64 and r.sample.batch_size == 5 and r.settings.tau == 0.025
    assert r.model.extra == {"producer": "a newer v1 writer"} and r.sample["steps"] == [0, 9]
    assert json.loads(r.to_json()) == d
    assert set(d["sample"]) == {"source", "samples", "batch_size", "seed", "inputs", "steps"}  # no null shard keys
    assert r.model.label == "m.onnx (onnx)"
    assert Report.from_dict({**d, "model": {"path": None, "format": "module", "sha256": None}}).model.label == \
        "in-memory module"


def test_site_metrics_are_properties_and_the_repr_is_short() -> None:
    site = _report().sites[0]
    assert (site.dead, site.dead_indices, site.neurons, site.dead_ratio) == (2, [0, 3], 4, 0.5)
    assert "dead=2" in repr(site) and "dead_ratio=0.500" in repr(site) and "array" not in repr(site)
    with pytest.raises(AttributeError):
        site.no_such_metric  # noqa: B018
    assert site.sample_axis == 0 and site.to_dict()["sample_axis"] == 0
    assert site.shape[site.sample_axis] == site.neurons


def test_summary_is_computed_from_the_counters_not_averaged() -> None:
    r = _report()
    s = r.summary
    assert (s.sites, s.neurons, s.dead, s.dead_ratio) == (1, 4, 2, 0.5)
    assert s.sparsity == pytest.approx(1 - 8 / 40)  # 8 positive entries of 4 neurons x 10 rows


def test_merge_finds_the_small_sample_warning_by_its_code_not_its_wording() -> None:
    reworded = Notice("too few inputs, reworded by a later version", notices.SMALL_SAMPLE)
    a = _report(warnings=[reworded, Notice("keep me", notices.CAPTURE)])
    merged = merge_reports([a, _report(samples=400)], ["a", "b"])
    assert "keep me" in merged.warnings and reworded not in merged.warnings
    assert [w.code for w in merged.warnings].count(notices.SMALL_SAMPLE) == 0  # 410 samples: floor < 1%
    small = merge_reports([a, _report(samples=20)], ["a", "b"])
    assert [w for w in small.warnings if w.code == notices.SMALL_SAMPLE] == [
        w for w in small.warnings if w.startswith("30 samples")]


def test_warning_codes_survive_json_and_old_reports_get_codes() -> None:
    r = rd.scan(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()), input_shape=(3,), samples=8,
                warn=False)
    codes = {w.code for w in Report.from_dict(json.loads(r.to_json())).warnings}
    assert {notices.SYNTHETIC_DATA, notices.SMALL_SAMPLE} <= codes
    old = json.loads(r.to_json())
    del old["warning_codes"]  # written before the codes existed
    assert {w.code for w in Report.from_dict(old).warnings} == {notices.OTHER, notices.SMALL_SAMPLE}


# ---- inputs are not changed ---------------------------------------------------------------


def _training_modes(m: torch.nn.Module) -> list[bool]:
    return [x.training for x in m.modules()]


@pytest.mark.parametrize("script", [False, True])
def test_a_scan_gives_the_module_back_in_its_training_mode(script: bool) -> None:
    c = case("reused_relu")
    model = c.build().train()
    model = torch.jit.script(model) if script else model
    list(model.modules())[-1].eval()  # a mix of modes must come back exactly
    before = _training_modes(model)
    rd.scan(model, sample_data(c, n=4), warn=False)
    assert _training_modes(model) == before
    with pytest.raises(rd.UserError, match="is empty"):  # refused after the module was put in eval mode
        rd.scan(model, sample_data(c, n=1), shard=(0, 2), warn=False)
    assert _training_modes(model) == before
    with pytest.raises(rd.UserError, match="failed"):  # the forward pass fails
        rd.scan(model, np.zeros((4, 7), np.float32), warn=False)
    assert _training_modes(model) == before


def test_resolving_input_shapes_leaves_the_given_specs_alone() -> None:
    given = [InputSpec("a"), InputSpec("b", (None, 4))]
    assert [s.shape for s in resolve_specs(given, ["b=2,4", "a=3"])] == [(3,), (2, 4)]
    assert [s.shape for s in resolve_specs(given, ["3", "2,4"])] == [(3,), (2, 4)]
    assert given == [InputSpec("a"), InputSpec("b", (None, 4))]


def test_iterating_batches_changes_nothing_and_counts_nonfinite_per_batch() -> None:
    data = np.ones((5, 2), np.float32)
    data[3, 1] = np.nan
    data[4, 0] = np.inf
    sample = array_sample([data], [InputSpec("x", (2,))], "array", None)
    before = repr(sample)
    first = [(b.valid, b.nonfinite) for b in sample.batches(2)]
    assert [(b.valid, b.nonfinite) for b in sample.batches(2)] == first == [(2, 0), (2, 1), (1, 1)]
    assert repr(sample) == before
    synthetic = synthetic_sample([InputSpec("x", (3,))], 4, 0, None)
    once = [b.arrays[0] for b in synthetic.batches(3)]
    twice = [b.arrays[0] for b in synthetic.batches(3)]
    assert all(np.array_equal(a, b) for a, b in zip(once, twice, strict=True))


def test_nonfinite_inputs_are_counted_once_per_scan() -> None:
    data = np.ones((6, 3), np.float32)
    data[2, 0] = np.nan
    data[5, 2] = -np.inf
    report = rd.scan(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), data, batch_size="auto",
                     warn=False)
    assert [w for w in report.warnings if w.code == notices.NONFINITE_INPUTS] == [
        "the inputs hold 2 NaN or infinite values: activations that depend on them are counted in each "
        "site's nonfinite"]


# ---- what scan writes, the check accepts ----------------------------------------------------


def test_every_catalogue_report_passes_the_report_check() -> None:
    """The check refuses tampered reports (tests/test_report_fuzz.py); it must accept every
    report relu-doctor writes: every catalogue case, NaN inputs included, and merged shards."""
    from relu_doctor.validate import check_report
    from tests.models import CASES

    for c in CASES:
        data = sample_data(c, n=9, seed=2)
        if data.dtype.kind == "f":
            data[1].flat[0] = np.nan  # non-finite entries are counted apart: still consistent
            data[2].flat[-1] = np.inf
        whole = rd.scan(c.build(), data, batch_size=4, warn=False)
        check_report(json.loads(whole.to_json()), c.name)
        parts = [rd.scan(c.build(), data, batch_size=4, shard=(i, 2), warn=False) for i in range(2)]
        check_report(json.loads(merge_reports(parts).to_json()), f"{c.name} merged")


def test_proofs_survive_a_merge_and_tampered_proofs_are_refused() -> None:
    from relu_doctor.validate import check_report

    c = case("reused_relu")
    parts = [rd.scan(c.build(), sample_data(c, n=8), prove=True, shard=(i, 2), warn=False) for i in range(2)]
    merged = json.loads(merge_reports(parts).to_json())
    check_report(merged)
    assert [s["provably_dead_indices"] for s in merged["sites"]] == [list(s.dead) for s in c.sites]
    for key, value, message in (("provably_dead_indices", [99], "sorted, unique neuron indices"),
                                ("provably_dead_indices", [1, 1], "sorted, unique neuron indices"),
                                ("proof", [], "one rule"), ("provably_dead", 7, "indices are listed")):
        bad = json.loads(json.dumps(merged))
        bad["sites"][0][key] = value
        with pytest.raises(rd.UserError, match=message):
            check_report(bad)


DELETE = object()


@pytest.mark.parametrize(("changes", "message"), [
    ({"provably_saturated_indices": [99]}, "sorted, unique neuron indices below 8"),
    ({"provably_saturated_indices": [5, 2]}, "sorted, unique neuron indices"),
    ({"provably_saturated_indices": [2, 2], "provably_saturated": 2}, "sorted, unique neuron indices"),
    ({"provably_saturated_indices": [-1]}, "sorted, unique neuron indices"),
    ({"provably_saturated_indices": ["2"]}, "sorted, unique neuron indices"),
    ({"provably_saturated_indices": 2}, "provably_saturated_indices"),
    ({"provably_saturated_indices": DELETE}, "provably_saturated_indices"),
    ({"provably_saturated": 3}, "but 2 indices are listed"),
    ({"provably_saturated": "2"}, "but 2 indices are listed"),
    ({"provably_saturated": True}, "but 2 indices are listed"),
    ({"provably_saturated_indices": [0, 2, 5], "provably_saturated": 3}, "also in provably_dead_indices"),
    ({"provably_dead_indices": DELETE, "provably_dead": DELETE, "proof": DELETE}, "beside provably_dead_indices"),
])
def test_tampered_provably_saturated_is_refused(changes: dict, message: str, tmp_path) -> None:
    from typer.testing import CliRunner

    from relu_doctor.cli import app
    from relu_doctor.validate import check_report

    c = case("relu6")  # BatchNorm weight 0, bias 7: channels 2 and 5 of the first ReLU6 are 6 on every input
    good = json.loads(rd.scan(c.build(), input_shape=c.input_shape, samples=4, prove=True, warn=False).to_json())
    check_report(good)
    site = good["sites"][0]
    assert (site["provably_dead_indices"], site["provably_saturated_indices"]) == ([0], [2, 5])
    bad = json.loads(json.dumps(good))
    for key, value in changes.items():
        if value is DELETE:
            del bad["sites"][0][key]
        else:
            bad["sites"][0][key] = value
    with pytest.raises(rd.UserError, match=message):
        check_report(bad)
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "good.json"), str(tmp_path / "bad.json")])
    assert result.exit_code == 2, result.output
    assert "provably_" in result.stderr and "Traceback" not in result.output


def test_provably_saturated_only_on_kinds_with_an_upper_bound() -> None:
    from relu_doctor.validate import check_report

    c = case("reused_relu")
    d = json.loads(rd.scan(c.build(), input_shape=c.input_shape, samples=4, prove=True, warn=False).to_json())
    check_report(d)
    assert "provably_saturated_indices" not in d["sites"][0]
    d["sites"][0]["provably_saturated_indices"] = []
    with pytest.raises(rd.UserError, match="only kinds with an upper bound"):
        check_report(d)
