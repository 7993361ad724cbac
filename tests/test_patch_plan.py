"""Which sites a patch rewrites, and with which slopes."""

from __future__ import annotations

import numpy as np
import pytest

import relu_doctor as rd
from relu_doctor.patching.plan import plan_patch
from tests.models import case, sample_data


@pytest.fixture(scope="module")
def relu6_report() -> rd.Report:
    c = case("relu6")
    return rd.scan(c.build(), data=sample_data(c, n=32))


@pytest.fixture(scope="module")
def leaky_report() -> rd.Report:
    c = case("leaky")
    return rd.scan(c.build(), data=sample_data(c, n=32))


def test_every_grad_blocked_site_with_dead_neurons_is_planned(relu6_report: rd.Report) -> None:
    plan = plan_patch(relu6_report)
    assert [(p.name, p.dead, p.upper, p.axis, p.rank) for p in plan.sites] == [
        ("relu6", (0,), 6.0, 1, 4), ("/relu6", (3, 4), 6.0, 1, 4), ("/relu6#2", (7,), 6.0, 1, 4)]
    assert plan.leaky_neurons == 4
    assert plan.site_names == ["relu6", "/relu6", "/relu6#2"]


def test_leaky_kinds_are_never_patched(leaky_report: rd.Report) -> None:
    assert any(s.dead for s in leaky_report.sites)
    assert plan_patch(leaky_report).sites == []


def test_min_dead_ratio_select_and_ignore_narrow_the_plan(relu6_report: rd.Report) -> None:
    assert [p.name for p in plan_patch(relu6_report, min_dead_ratio=0.25).sites] == ["/relu6"]
    assert [p.name for p in plan_patch(relu6_report, select=["/*"]).sites] == ["/relu6", "/relu6#2"]
    assert [p.name for p in plan_patch(relu6_report, ignore=["*#2"]).sites] == ["relu6", "/relu6"]


def test_layer_mode_makes_every_neuron_of_a_site_leak(relu6_report: rd.Report) -> None:
    plan = plan_patch(relu6_report, mode="layer")
    assert plan.leaky_neurons == 24


def test_slopes_leak_dead_neurons_and_keep_relu_bits_for_the_rest(relu6_report: rd.Report) -> None:
    p = plan_patch(relu6_report, slope=0.2).sites[1]
    w = p.slopes()
    assert w.dtype == np.float32 and w.shape == (8,)
    assert list(np.flatnonzero(w)) == [3, 4] and np.all(w[[3, 4]] == np.float32(0.2))
    # -0.0 on live neurons: -0.0 * x is +0.0 for negative x, the bits ReLU returns
    assert np.all(np.signbit(np.delete(w, [3, 4])))
    negative = np.array([-3.5, -1e-30], np.float32)
    assert np.array_equal((np.float32(-0.0) * negative).view(np.uint32), np.zeros(2, np.uint32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"slope": 0.0}, "--slope"), ({"slope": float("nan")}, "--slope"), ({"slope": 1.5}, "--slope"),
    ({"mode": "block"}, "--mode"), ({"min_dead_ratio": -0.1}, "--min-dead-ratio"),
    ({"select": ["conv*"]}, "matches none"),
])
def test_wrong_options_are_user_errors(relu6_report: rd.Report, kwargs: dict, message: str) -> None:
    with pytest.raises(rd.UserError, match=message):
        plan_patch(relu6_report, **kwargs)
