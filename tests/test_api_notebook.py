"""The API as a notebook user meets it: dir(), reprs, Rich, Python warnings, baseline keywords."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from rich.console import Console

import relu_doctor as rd
from tests.models import case, sample_data

CASE = case("reused_relu")


def test_dir_lists_the_lazy_api() -> None:
    assert {"scan", "patch", "Report", "Site", "ReluDoctorWarning"} <= set(dir(rd))
    assert not {"Any", "annotations"} & set(dir(rd))  # this package's own imports are not API


def test_reports_render_with_rich_and_say_in_memory_once() -> None:
    report = rd.scan(CASE.build(), sample_data(CASE, n=8), warn=False)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(report)
    text = out.getvalue()
    assert report.sites[0].name in text and "Model: in-memory module" in text
    assert "Model in-memory module, 8 inputs" in report.to_markdown()
    assert "(in memory) (module)" not in report.to_markdown()
    assert repr(report).startswith("Report(in-memory module: ") and len(repr(report)) < 200
    pytest.importorskip("matplotlib")
    assert '<p class="sub">in-memory module · 8 inputs' in report.to_html()


def test_warnings_are_emitted_through_python_warnings_once_each() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = rd.scan(CASE.build(), input_shape=CASE.input_shape, samples=8)
    emitted = [str(w.message) for w in caught if issubclass(w.category, rd.ReluDoctorWarning)]
    assert emitted == [str(w) for w in report.warnings] and any("synthetic" in w for w in emitted)
    assert all(w.filename == __file__ for w in caught if issubclass(w.category, rd.ReluDoctorWarning))
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        rd.scan(CASE.build(), input_shape=CASE.input_shape, samples=8, warn=False)
    assert not [w for w in quiet if issubclass(w.category, rd.ReluDoctorWarning)]


def _mlp(dead: list[int]) -> torch.nn.Module:
    """Linear(4, 6) + ReLU; the `dead` features are -1 before the ReLU on every input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    with torch.no_grad():
        model[0].bias.fill_(0.5)
        for i in dead:
            model[0].weight[i], model[0].bias[i] = 0, -1
    return model


def test_baseline_and_fail_increase_are_api_keywords(tmp_path) -> None:
    data = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    base = rd.scan(_mlp([1]), data, warn=False)
    path = tmp_path / "base.json"
    path.write_text(base.to_json())
    report = rd.scan(_mlp([1, 4]), data, baseline=path, fail_increase=10, warn=False)  # 1/6 -> 2/6: +16.7 pp
    assert report.diff is not None and not report.diff.passed
    assert [(v.site, v.increase_pp) for v in report.diff.violations] == [("1", pytest.approx(100 / 6))]
    assert rd.scan(_mlp([1, 4]), data, baseline=base, fail_increase=20, warn=False).diff.passed
    with pytest.raises(rd.UserError, match="fail_increase needs a baseline"):
        rd.scan(_mlp([]), data, fail_increase=1)
    with pytest.raises(rd.UserError, match="percentage points"):
        rd.scan(_mlp([]), data, baseline=base, fail_increase=150)
    assert "diff" not in report.to_dict()  # the JSON report is unchanged


def test_site_and_report_json_keep_their_keys() -> None:
    report = rd.scan(CASE.build(), sample_data(CASE, n=8), warn=False)
    d = report.to_dict()
    assert list(d) == ["schema", "tool", "model", "sample", "settings", "summary", "sites", "gates", "warnings",
                       "warning_codes"]
    site = d["sites"][0]
    assert site["shape"][site["sample_axis"]] == site["neurons"] == np.asarray(site["counters"]["fires"]).size
    assert site["sample_axis"] == site["axis"] - 1
