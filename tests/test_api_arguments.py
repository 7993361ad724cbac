"""The API's keyword arguments are checked as the CLI's flags are: a wrong type or value
is a UserError naming the flag, never a TypeError or ZeroDivisionError from deep inside."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.errors import UserError
from relu_doctor.patching.plan import plan_patch

X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU())


@pytest.mark.parametrize(("keyword", "value", "message"), [
    ("samples", "8", "--samples must be a whole number"),
    ("samples", 1.5, "--samples must be a whole number"),
    ("samples", True, "--samples must be a whole number"),
    ("max_batches", "x", "--max-batches must be a whole number"),
    ("max_batches", 0, "--max-batches must be at least 1"),
    ("batch_size", True, "--batch-size must be at least 1, or auto"),
    ("seed", -1, "--seed must be at least 0"),
    ("seed", "x", "--seed must be a whole number"),
    ("tau", "0.1", "--tau must be a number"),
    ("fail_dead_ratio", "0.5", "--fail-dead-ratio must be a number"),
    ("shard", (1, 0), "I must be in 0..N-1"),
    ("shard", (0.5, 2), "is not I/N"),
    ("input_range", (0,), "is not LO,HI"),
    ("input_range", (1, 0), "LO must be below HI"),
    ("input_range", (0, float("inf")), "finite"),
    ("input_shape", 3.5, "is not a shape"),
    ("input_shape", (3, -1), "every dimension must be a whole number >= 1"),
    ("input_shape", {"input": (3.0,)}, "every dimension must be a whole number >= 1"),
])
def test_a_wrong_keyword_value_is_a_user_error_naming_the_flag(keyword: str, value: Any, message: str) -> None:
    kwargs: dict[str, Any] = {"input_shape": "3", "samples": 4} if keyword in ("seed", "input_shape") else {"data": X}
    kwargs[keyword] = value
    with pytest.raises(UserError, match=re.escape(message)):
        rd.scan(_net(), warn=False, **kwargs)


def test_numpy_numbers_and_tuples_are_taken_as_their_values() -> None:
    want = rd.scan(_net(), X, warn=False, tau=0.1, shard="0/2", fail_dead_ratio=0.5, input_range="0,1")
    got = rd.scan(_net(), X, warn=False, tau=np.float32(0.1), shard=(0, 2), fail_dead_ratio=np.float64(0.5),
                  input_range=(0, 1))
    assert got.sites[0].counters.fires.tolist() == want.sites[0].counters.fires.tolist()
    assert got.settings.tau == pytest.approx(want.settings.tau) and got.sample.samples == want.sample.samples == 2


def test_one_select_string_is_one_glob_not_one_per_character() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 4), act1=nn.ReLU(), fc2=nn.Linear(4, 4), act2=nn.ReLU()))
    with torch.no_grad():  # planted: neuron 0 of each site never fires
        for fc in (net.fc1, net.fc2):
            fc.weight[0], fc.bias[0] = 0, -1
    # as characters, "act2" matches no site: a gate would refuse the --select
    report = rd.scan(net, X, warn=False, select="act2", fail_dead_ratio=1.0)
    assert report.settings.select == ["act2"] and report.gates.passed
    assert all(0 in s.dead_indices for s in report.sites)
    plan = plan_patch(report, select="act*", ignore="act1")
    assert [p.name for p in plan.sites] == ["act2"]
    with pytest.raises(UserError, match="--select takes glob patterns"):
        rd.scan(net, X, warn=False, select=[3])


@pytest.mark.parametrize("call", ["patch", "revive", "baseline"])
def test_a_report_argument_is_a_report_or_its_json_path(call: str, tmp_path: Path) -> None:
    net = _net()
    report = rd.scan(net, X, warn=False)
    path = tmp_path / "r.json"
    path.write_text(report.to_json())

    def run(value: Any) -> Any:
        if call == "baseline":
            return rd.scan(net, X, warn=False, baseline=value)
        return getattr(rd, call)(net, value)

    run(str(path))  # read and checked like `relu-doctor ... --report`
    for bad, message in ((3, "must be a Report or the path of its JSON"), (None, "must be a Report or the path"),
                         (tmp_path / "missing.json", "not found")):
        if call == "baseline" and bad is None:
            continue  # baseline=None means no comparison
        with pytest.raises(UserError, match=message):
            run(bad)


@pytest.mark.parametrize(("keyword", "value", "message"), [
    ("slope", "x", "--slope must be a number"), ("slope", 2, "--slope must be in (0, 1]"),
    ("optimizer", "adam", "optimizer must be the torch.optim.Optimizer"), ("tau", "x", "--tau must be a number"),
])
def test_revive_checks_its_keywords(keyword: str, value: Any, message: str) -> None:
    net = _net()
    report = rd.scan(net, X, warn=False)
    with pytest.raises(UserError, match=re.escape(message)):
        rd.revive(net, report, **{keyword: value})


def test_numpy_settings_leave_plain_numbers_in_the_report() -> None:
    """numpy scalars (float32 is no float subclass, int64 no int) were stored as given: the
    report's JSON failed, and the synthetic sample refused an np.int64 seed."""
    want = rd.scan(_net(), warn=False, input_shape="3", samples=8, tau=0.25, seed=3, fail_dead_ratio=0.5,
                   fail_total_dead_ratio=0.5, fail_provably_dead=0.5)
    got = rd.scan(_net(), warn=False, input_shape="3", samples=np.int64(8), tau=np.float32(0.25), seed=np.int64(3),
                  fail_dead_ratio=np.float32(0.5), fail_total_dead_ratio=np.float32(0.5),
                  fail_provably_dead=np.float32(0.5))
    assert json.loads(got.to_json())["settings"] == json.loads(want.to_json())["settings"]
    assert json.loads(got.to_json())["gates"] == json.loads(want.to_json())["gates"]
    net = _net()
    with rd.watch(net, every=1, window=1, tau=np.float32(0.25), fail_dead_ratio=np.float32(0.5)) as w:
        net(torch.from_numpy(X))
        w.step()
    assert json.loads(w.reports[0].to_json())["settings"]["tau"] == 0.25


def test_revive_refuses_a_tau_outside_zero_to_one() -> None:
    report = rd.scan(_net(), X, warn=False)
    with pytest.raises(UserError, match="--tau must be between 0 and 1"):
        rd.revive(_net(), report, tau=5)
