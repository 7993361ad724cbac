"""Timelines of a training run, from a watch history and from checkpoints, against a naive record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.analysis.checkpoints import from_checkpoints, name_number
from relu_doctor.analysis.timeline import SCHEMA, from_history
from relu_doctor.errors import UserError
from relu_doctor.render.timeline import render_timeline_csv, render_timeline_markdown
from relu_doctor.training.history import read_history
from tests.training_runs import CASES, KILL_STEP, NaiveRecorder, data, train

EVERY, WINDOW = 10, 3


def expected_died_at(naive: NaiveRecorder, site: str, windows: list[tuple[int, int]]) -> dict[int, int]:
    """By hand: for each neuron dead in the last window, the end of the first window of its final dead run."""
    dead = [set(naive.dead(site, a, b)) for a, b in windows]
    out = {}
    for neuron in dead[-1]:
        i = len(dead) - 1
        while i > 0 and neuron in dead[i - 1]:
            i -= 1
        out[neuron] = windows[i][1]
    return out


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.name)
def run(request, tmp_path_factory):
    history = tmp_path_factory.mktemp("hist") / "relu.jsonl"
    _, _, w, naive = train(request.param, lambda m: rd.watch(m, every=EVERY, window=WINDOW, history=history),
                           record=True)
    return request.param, history, naive


def test_history_timeline_names_the_neurons_and_the_window_they_died_in(run) -> None:
    case, history, naive = run
    reports, warnings = read_history(history)
    timeline = from_history(reports)
    windows = [(k, k + WINDOW - 1) for k in range(0, 60, EVERY)]
    assert timeline.steps == [b for _, b in windows] and not warnings
    killed = 0
    for site in timeline.sites:
        assert site.died_at == expected_died_at(naive, site.name, windows)
        assert site.dead == [len(naive.dead(site.name, a, b)) for a, b in windows]
        # the spike kills: a neuron alive in the window before it is dead in every one after it
        killed += sum(1 for step in site.died_at.values() if step == 32)
        assert all(step != 32 or KILL_STEP < 30 for step in site.died_at.values())
    assert killed > 0
    d = json.loads(timeline.to_json())
    assert d["schema"] == SCHEMA
    assert [p["step"] for p in d["points"]] == timeline.steps
    assert all(set(p["summary"]) >= {"dead", "dead_ratio", "neurons"} for p in d["points"])
    first = d["sites"][0]
    assert set(first) >= {"name", "kind", "dead_ratio", "died_at", "revived"}
    assert first["died_at"] == {str(k): v for k, v in sorted(timeline.sites[0].died_at.items())}


class _SaveEvery:
    """Stands in for a watch in train(): saves the weights after every 10th optimizer step."""

    def __init__(self, model: nn.Module, folder: Path) -> None:
        self.model, self.folder, self.steps = model, folder, 0

    def __enter__(self) -> _SaveEvery:
        self._save()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def step(self) -> None:
        self.steps += 1
        if self.steps % EVERY == 0:
            self._save()

    def _save(self) -> None:
        # names deliberately sort wrong as text (ckpt-100 < ckpt-20); the stored step orders them
        torch.save({"state_dict": self.model.state_dict(), "global_step": self.steps},
                   self.folder / f"run-{(self.steps * 7) % 13}.pt")


@pytest.mark.parametrize("case", CASES[:1], ids=lambda c: c.name)
def test_checkpoint_timeline_is_ordered_by_stored_step_and_matches_the_record(case, tmp_path) -> None:
    _, _, _, naive = train(case, lambda m: _SaveEvery(m, tmp_path), record=True)
    assert naive is not None
    x, _ = data(case)
    paths = sorted(tmp_path.glob("*.pt"))
    timeline = from_checkpoints(paths, data=x.numpy(), arch="tests.training_runs:mlp")
    assert timeline.steps == list(range(0, 61, EVERY))
    # A checkpoint after n updates holds the weights step n's forward saw (the rate is 0 from
    # FREEZE_STEP, so the last one, after the 60th update, holds those of step 59).
    for site in timeline.sites:
        assert site.dead == [len(naive.dead(site.name, min(n, 59), min(n, 59))) for n in timeline.steps]
        last = set(naive.dead(site.name, 59, 59))
        assert set(site.died_at) == last
    gated = from_checkpoints(paths, data=x.numpy(), arch="tests.training_runs:mlp", fail_new_dead=1)
    assert not gated.passed and gated.violations[0].site == "3"


def test_file_name_numbers_order_when_nothing_is_stored() -> None:
    assert name_number(Path("ckpt-1200.pt")) == 1200
    assert name_number(Path("epoch=3-step=40.ckpt")) == 40
    assert name_number(Path("final.onnx")) is None


def test_markdown_and_csv_say_the_same_as_the_json(run) -> None:
    _, history, _ = run
    timeline = from_history(read_history(history)[0])
    csv_rows = render_timeline_csv(timeline).splitlines()
    assert csv_rows[0] == "site,kind,neurons,step,label,dead,dead_ratio,died,revived"
    assert len(csv_rows) == 1 + len(timeline.sites) * len(timeline.points)
    died_cells = [row.split(",")[7] for row in csv_rows[1:]]
    assert sorted(int(n) for cell in died_cells for n in cell.split()) == \
        sorted(n for s in timeline.sites for n in s.died_at)
    md = render_timeline_markdown(timeline)
    assert "| site | kind | neurons | step 2 |" in md
    for site in timeline.sites:
        for step in set(site.died_at.values()):
            assert f"dead from step {step}" in md


def test_revived_neurons_are_listed() -> None:
    from relu_doctor.analysis.timeline import build_timeline

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    reports = []
    for bias in (1.0, -5.0, 1.0, -5.0):  # neuron 0 dies, revives, dies again
        with torch.no_grad():
            model[0].weight.zero_()
            model[0].bias.copy_(torch.tensor([bias, 1.0, -5.0]))
        reports.append(rd.scan(model, x.numpy()))
    timeline = build_timeline([(10 * i, str(i), r) for i, r in enumerate(reports)], "checkpoints")
    site = timeline.site("1")
    assert site.died_at == {0: 30, 2: 0} and site.revived == {0: 20}


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content", [
    b"", b"\n\n", b"\xff\xfe garbage", b"not json\n", b"[1, 2]\n", b'{"schema": "other"}\n',
    b"[" * 100000 + b"\n",
])
def test_garbage_history_is_a_user_error(content: bytes, tmp_path) -> None:
    with pytest.raises(UserError):
        read_history(_write(tmp_path / "h.jsonl", content))


def _a_report_line() -> dict:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    d = rd.scan(model, torch.randn(4, 2).numpy()).to_dict()
    d["sample"]["steps"] = [0, 3]
    return d


@pytest.mark.parametrize("spoil", [
    lambda d: d["sites"][0]["counters"].update(fires=[1, 2]),  # 2 neurons, other arrays 3
    lambda d: d["sites"][0]["counters"].update(fires=[-1, 0, 0]),
    lambda d: d["sites"][0].update(kind="nonsense"),
    lambda d: d["sample"].update(steps=[5, "x"]),
    lambda d: d["sample"].update(steps=[9, 3]),
    lambda d: d["sites"][0]["counters"].update(abs_sum=[1e400, 0, 0]),
    lambda d: d["sites"][0]["counters"].pop("rows"),
    lambda d: d["sites"].append(d["sites"][0]),
    lambda d: d.update(sites="abc"),
])
def test_inconsistent_report_lines_are_refused_with_the_line_number(spoil, tmp_path) -> None:
    good = json.dumps(_a_report_line())
    bad = _a_report_line()
    spoil(bad)
    path = _write(tmp_path / "h.jsonl", (good + "\n" + json.dumps(bad) + "\n").encode())
    with pytest.raises(UserError, match=r"h.jsonl:2:"):
        read_history(path)


def test_a_cut_off_last_line_is_skipped_with_a_warning(tmp_path) -> None:
    good = json.dumps(_a_report_line())
    path = _write(tmp_path / "h.jsonl", (good + "\n" + good[: len(good) // 2]).encode())
    reports, warnings = read_history(path)
    assert len(reports) == 1 and "incomplete" in warnings[0]


def test_missing_and_folder_histories(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_history(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="folder"):
        read_history(tmp_path)


def test_a_run_resumed_into_the_same_history_replaces_the_steps_it_redid(run) -> None:
    _, history, _ = run
    reports, _ = read_history(history)
    timeline = from_history(reports[:4] + reports[2:])  # steps 2..32, then 22 again onwards
    assert timeline.steps == [2, 12, 22, 32, 42, 52]
    assert "goes back to step 22" in timeline.warnings[0]
