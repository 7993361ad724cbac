"""watch(): windows of the loop's own forward passes, probes that leave the model alone, and the sinks."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.errors import UserError
from relu_doctor.report import Report
from relu_doctor.training import DeadReLUAlert
from tests.training_runs import CASES, KILL_STEP, Case, data, train

EVERY, WINDOW = 10, 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_windows_show_the_deaths_of_the_lr_spike(case: Case, tmp_path) -> None:
    history = tmp_path / "relu.jsonl"
    model, _, w, naive = train(case, lambda m: rd.watch(m, every=EVERY, window=WINDOW, history=history), record=True)
    assert naive is not None
    reports = w.reports
    assert [r.sample["steps"] for r in reports] == [[k, k + WINDOW - 1] for k in range(0, 60, EVERY)]
    x, _ = data(case)
    for r in reports:
        first, last = r.sample["steps"]
        assert r.sample["source"] == "training"
        assert r.sample["samples"] == WINDOW * len(x)  # full batch: every step sees every row
        assert [s.name for s in r.sites] == ["1", "3"]
        for site in r.sites:  # the neurons named are exactly those the plain record says never fired
            assert site.dead_indices == naive.dead(site.name, first, last), (site.name, first)
    # The spike at KILL_STEP kills first-layer neurons that were alive in every window before it.
    before = [r for r in reports if r.sample["steps"][1] < KILL_STEP]
    after = [r for r in reports if r.sample["steps"][0] > KILL_STEP]
    assert all(r.sites[0].dead == 0 for r in before)
    assert all(r.site("1").dead > 0 or r.site("3").dead > before[-1].site("3").dead for r in after)
    # One JSON line per window, each a full report.
    lines = history.read_text().splitlines()
    assert [Report.from_dict(json.loads(line)).site("1").dead_indices for line in lines] == \
        [r.site("1").dead_indices for r in reports]
    # A plain scan of the final weights on the same data names the same neurons as the last window.
    final = rd.scan(model, x.numpy())
    for site in final.sites:
        assert site.dead_indices == reports[-1].site(site.name).dead_indices


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_watching_changes_no_loss_and_no_weight(case: Case) -> None:
    x, _ = data(case)
    plain, plain_losses, _, _ = train(case)
    passive, passive_losses, _, _ = train(case, lambda m: rd.watch(m, every=4, window=2))
    probed, probed_losses, _, _ = train(case, lambda m: rd.watch(m, every=7, probe=x[:16]))
    for losses in (passive_losses, probed_losses):
        assert all(torch.equal(a, b) for a, b in zip(plain_losses, losses, strict=True))
    for model in (passive, probed):
        for (name, a), (_, b) in zip(plain.state_dict().items(), model.state_dict().items(), strict=True):
            assert torch.equal(a, b), name


class _Noisy(nn.Module):
    """BatchNorm (running stats), dropout (RNG in training) and a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 2)
        self.head.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.drop(self.bn(self.conv(x))))
        return self.head(h.mean((2, 3)))


def test_probe_leaves_the_model_bit_identical() -> None:
    torch.manual_seed(0)
    model = _Noisy().train()
    model.bn.eval()  # a mix of flags must come back as it was
    probe = torch.randn(12, 3, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    w = rd.watch(model, every=1, probe=probe)
    w.start()
    w.step()
    first, second = w.reports
    assert first.sample["source"] == "probe" and first.sample["steps"] == [0, 0]
    assert second.sample["steps"] == [1, 1]
    assert first.to_dict()["sites"] == second.to_dict()["sites"]  # same weights, same report
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.conv.training and not model.bn.training
    assert not model.head.weight.requires_grad and model.head.bias.requires_grad
    assert [s.name for s in first.sites] == ["/relu"]


def test_a_window_cut_short_reports_the_steps_it_saw() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    x = torch.randn(6, 4)
    with rd.watch(model, every=10, window=5) as w:
        for _ in range(12):
            model(x)
            w.step()
    assert [r.sample["steps"] for r in w.reports] == [[0, 4], [10, 11]]
    assert [r.sample["forward_passes"] for r in w.reports] == [5, 2]


def test_no_capture_outside_windows_and_hooks_removed() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    x = torch.randn(6, 4)
    w = rd.watch(model, every=3, window=1)
    w.start()
    assert model._forward_pre_hooks  # the window of step 0 is open
    model(x)
    w.step()
    assert not model._forward_pre_hooks and not model[1]._forward_hooks
    model(x)
    w.step()
    w.close()
    assert w.reports[0].sample["forward_passes"] == 1


def _dying_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[0].bias[:2] = -1  # neurons 0 and 1 are dead on every input
    return model


def test_alerts_call_back_warn_or_raise() -> None:
    x = torch.randn(6, 4)
    seen: list[Report] = []
    with rd.watch(_dying_model(), every=1, window=1, fail_dead_ratio=0.2, on_alert=seen.append) as w:
        model = w.model
        model(x)
        w.step()
    assert len(seen) == 1 and seen[0].gates.violations[0].site == "1"
    assert seen[0].site("1").dead_indices == [0, 1]
    with pytest.warns(RuntimeWarning, match="dead ReLUs at steps 0-0"):
        with rd.watch(_dying_model(), every=1, window=1, fail_total_dead_ratio=0.2) as w:
            w.model(x)
            w.step()
    with pytest.raises(DeadReLUAlert):
        with rd.watch(_dying_model(), every=1, window=1, fail_dead_ratio=0.2, on_alert="raise") as w:
            w.model(x)
            w.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under the threshold: silence
        with rd.watch(_dying_model(), every=1, window=1, fail_dead_ratio=0.5) as w:
            w.model(x)
            w.step()


def test_tensorboard_scalars_read_back_with_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    x = torch.randn(6, 4)
    writer = SummaryWriter(str(tmp_path))
    with rd.watch(_dying_model(), every=2, window=2, writer=writer) as w:
        for _ in range(4):
            w.model(x)
            w.step()
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    site = [(e.step, e.value) for e in events.Scalars("relu_doctor/dead_ratio/1")]
    assert site == [(1, pytest.approx(0.4)), (3, pytest.approx(0.4))]
    assert [e.value for e in events.Scalars("relu_doctor/dead")] == [2.0, 2.0]


def test_bad_settings_are_user_errors(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    for kwargs, message in (({"every": 0}, "every must be a positive"), ({"every": 5, "window": 6}, "window must be"),
                            ({"tau": 2.0}, "tau must be between 0 and 1"),
                            ({"fail_dead_ratio": 25}, "fail-dead-ratio is a fraction"),
                            ({"on_alert": "explode"}, "on_alert must be"), ({"history": tmp_path}, "is a folder")):
        with pytest.raises(UserError, match=message):
            rd.watch(model, **kwargs)
    with pytest.raises(UserError, match="needs an nn.Module"):
        rd.watch("model.pt")


def test_forward_passes_without_gradients_stay_out_of_the_window() -> None:
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0]))
    x = torch.randn(6, 4)
    with rd.watch(model, every=1, window=1) as w:
        model(x)
        with torch.no_grad():  # an evaluation in the loop: other data, not training
            model.eval()(x)
            model.train()
        with torch.inference_mode():
            model(x)
        w.step()
    assert w.reports[0].sample["forward_passes"] == 1 and w.reports[0].sample["samples"] == 6
