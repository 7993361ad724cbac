"""`--neurons FILE.npz`: per-neuron arrays that reproduce the report and merge exactly.

Every per-site number is recomputed here from the arrays alone, with the SPEC's
definitions written out again (not stats.py's), and checked against the JSON report and
against the catalogue's planted dead neurons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import relu_doctor as rd
from relu_doctor.neurons import merge_neuron_arrays, neuron_arrays, read_neurons, write_neurons
from relu_doctor.report import Report
from tests.models import case, sample_data

CASES = ("relu6", "leaky", "mlp_tokens", "reused_relu")


def scan(name: str, **kw: object) -> Report:
    c = case(name)
    return rd.scan(c.build(), sample_data(c, 48), batch_size=16, **kw)  # type: ignore[arg-type]


def site_numbers(arrays: dict[str, np.ndarray], i: int, tau: float) -> dict[str, object]:
    """dead, dead indices, sparsity and dormant of site i, from its arrays only (SPEC 4)."""
    fires, entries, abs_sum = arrays[f"{i}/fires"], arrays[f"{i}/entries"], arrays[f"{i}/abs_sum"]
    mean_abs = abs_sum / entries
    layer = mean_abs.mean()
    dormant = np.ones(len(fires), bool) if layer == 0 else mean_abs / layer <= tau
    return {
        "neurons": len(fires),
        "dead": int(np.sum(fires == 0)),
        "dead_indices": [int(j) for j in np.nonzero(fires == 0)[0]],
        "sparsity": 1 - fires.sum() / entries.sum(),
        "dormant": int(dormant.sum()),
        "always_on": int(np.sum(fires == entries)),
    }


@pytest.mark.parametrize("name", CASES)
def test_arrays_reproduce_every_per_site_number_of_the_report(name: str, tmp_path: Path) -> None:
    report = scan(name)
    path = tmp_path / "n.npz"
    write_neurons(report, path)
    arrays = read_neurons(path)
    doc = report.to_dict(with_counters=False)
    assert list(arrays["names"]) == [s["name"] for s in doc["sites"]]
    assert list(arrays["axes"]) == [s["axis"] for s in doc["sites"]]
    for site, expected in zip(doc["sites"], case(name).sites, strict=True):
        i = site["index"]
        got = site_numbers(arrays, i, doc["settings"]["tau"])
        assert got["dead_indices"] == list(expected.dead)  # the planted answer
        for key in ("neurons", "dead", "dead_indices", "dormant", "always_on"):
            assert got[key] == site[key], (site["name"], key)
        assert got["sparsity"] == pytest.approx(site["sparsity"], abs=1e-12)
        assert int(arrays[f"{i}/samples"]) == 48
        assert np.all(arrays[f"{i}/samples_fired"] <= 48)
        assert np.all((arrays[f"{i}/samples_fired"] == 0) == (arrays[f"{i}/fires"] == 0))
        if site["kind"] == "relu6":  # bounded kinds keep the per-neuron minimum: saturation follows
            saturated = arrays[f"{i}/min"] >= 6
            assert list(np.nonzero(saturated)[0]) == list(expected.saturated)
            assert int(saturated.sum()) == site["saturated"]
        else:
            assert np.isnan(arrays[f"{i}/min"]).all()  # not measured, never a made-up 0
        assert np.isnan(arrays[f"{i}/max"]).all()
        assert float(arrays[f"{i}/site_max"]) == pytest.approx(site["max"])


@pytest.mark.parametrize("name", ("relu6", "mlp_tokens"))
def test_merged_shards_arrays_equal_the_whole_scan(name: str, tmp_path: Path) -> None:
    whole = neuron_arrays(scan(name))
    parts = []
    for i in range(3):
        path = tmp_path / f"shard{i}.npz"
        write_neurons(scan(name, shard=f"{i}/3"), path)
        parts.append(read_neurons(path))
    assert sum(int(p["0/samples"]) for p in parts) == 48
    merged = merge_neuron_arrays(parts)
    assert set(merged) == set(whole)
    for key, value in whole.items():
        if value.dtype.kind == "f":  # float sums may differ in the last bits (summation order)
            np.testing.assert_allclose(merged[key], value, rtol=1e-12, equal_nan=True)
        else:
            np.testing.assert_array_equal(merged[key], value, err_msg=key)
    # merging the shards' reports gives the same arrays too
    from relu_doctor.merge import merge_reports

    via_reports = neuron_arrays(merge_reports([scan(name, shard=f"{i}/3") for i in range(3)]))
    for key, value in whole.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(via_reports[key], value, rtol=1e-12, equal_nan=True, err_msg=key)
        else:
            np.testing.assert_array_equal(via_reports[key], value, err_msg=key)


def test_merge_refuses_arrays_of_other_sites() -> None:
    a, b = neuron_arrays(scan("mlp")), neuron_arrays(scan("relu6"))
    with pytest.raises(ValueError, match="sites differ"):
        merge_neuron_arrays([a, b])


def test_hostile_names_round_trip_without_pickles(tmp_path: Path) -> None:
    report = scan("mlp")
    report.sites[0].name = "<script>alert(1)</script>\"'&"
    path = tmp_path / "n.npz"
    write_neurons(report, path)
    assert read_neurons(path)["names"][0] == "<script>alert(1)</script>\"'&"


def test_arrays_over_time_stack_points_and_mark_missing_sites(tmp_path: Path) -> None:
    from relu_doctor.neurons import neuron_arrays_over_time

    reports = [scan("mlp"), scan("mlp"), scan("mlp")]
    reports[1].sites.pop(0)  # relu1 did not run at the second point
    arrays = neuron_arrays_over_time(reports, [0, 100, 200])
    path = tmp_path / "t.npz"
    write_neurons(arrays, path)
    back = read_neurons(path)
    assert list(back["names"]) == ["relu1", "relu2"] and list(back["steps"]) == [0, 100, 200]
    assert back["0/fires"].shape == (3, 16) and back["1/fires"].shape == (3, 10)
    for point in (0, 2):
        np.testing.assert_array_equal(back["0/fires"][point], reports[point].sites[0].counters.fires)
    assert (back["0/entries"][1] == 0).all() and np.isnan(back["0/abs_sum"][1]).all()  # not measured
    np.testing.assert_array_equal(back["1/fires"][1], reports[1].sites[0].counters.fires)
