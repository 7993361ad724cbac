"""Algebra of counters and reports: merge is associative and order-free; JSON round trips."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from relu_doctor.report import Report, Site
from relu_doctor.stats import SiteCounters

NEURONS = 5


@st.composite
def counters(draw: st.DrawFn, bounded: bool = False) -> SiteCounters:
    rows = draw(st.integers(0, 50))
    samples = draw(st.integers(0, rows))
    ints = st.lists(st.integers(0, rows), min_size=NEURONS, max_size=NEURONS)
    floats = st.lists(st.floats(0, 1e6, allow_nan=False), min_size=NEURONS, max_size=NEURONS)
    return SiteCounters(
        neurons=NEURONS, rows=rows, samples=samples,
        fires=np.array(draw(ints)), sample_fires=np.minimum(np.array(draw(ints)), samples),
        abs_sum=np.array(draw(floats)),
        min=np.array(draw(floats)) if bounded else None,
        total=draw(st.floats(-1e6, 1e6)), max=draw(st.floats(-1e6, 1e6)), nonfinite=draw(st.integers(0, 9)),
    )


def assert_equal_counters(a: SiteCounters, b: SiteCounters) -> None:
    for key in ("rows", "samples", "nonfinite", "max"):
        assert getattr(a, key) == getattr(b, key)
    for key in ("fires", "sample_fires"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_allclose(a.abs_sum, b.abs_sum, rtol=1e-12)
    np.testing.assert_allclose(a.total, b.total, rtol=1e-12, atol=1e-6)
    if a.min is not None:
        np.testing.assert_array_equal(a.min, b.min)


@settings(max_examples=200, deadline=None)
@given(st.booleans().flatmap(lambda b: st.tuples(counters(b), counters(b), counters(b))))
def test_merge_is_associative_and_commutative(abc: tuple[SiteCounters, SiteCounters, SiteCounters]) -> None:
    a, b, c = abc
    left = a.merge(b).merge(c)
    assert_equal_counters(left, a.merge(b.merge(c)))
    assert_equal_counters(left, c.merge(a).merge(b))
    assert_equal_counters(a.merge(b), b.merge(a))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["relu", "relu6", "leaky_relu", "clip"]), counters(True)),
                min_size=0, max_size=4), st.integers(1, 1000))
def test_report_survives_a_json_round_trip(site_specs: list, samples: int) -> None:
    sites = [
        Site(index=i, name=f"layer{i}.relu", kind=kind, op="nn.ReLU",
             params={"max": 3.0} if kind == "clip" else {}, shape=[NEURONS, 2], axis=1,
             counters=c if kind in ("relu6", "clip") else SiteCounters(**{**c.__dict__, "min": None}))
        for i, (kind, c) in enumerate(site_specs)
    ]
    report = Report(model={"path": "m.onnx", "format": "onnx", "sha256": "0" * 64},
                    sample={"source": "synthetic", "samples": samples, "batch_size": 32, "seed": 0, "inputs": []},
                    settings={"tau": 0.025, "neuron_axis": "auto"}, sites=sites)
    text = report.to_json()
    again = Report.from_dict(json.loads(text))
    assert again.to_json() == text
