"""Sample inputs: data files, in-memory data, synthetic streams, fixed batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from relu_doctor.errors import UserError
from relu_doctor.inputs import InputSpec, Sample


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 6)
        self.b = torch.nn.Linear(3, 6)

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.a(image) - self.b(extra).abs() * 100 - 50)  # dead everywhere


def test_npz_and_pt_and_dict_data_by_input_name(tmp_path: Path) -> None:
    model = TwoInputs().eval()
    image = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    extra = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", extra=extra, image=image)  # order differs from the signature
    torch.save({"image": torch.from_numpy(image), "extra": torch.from_numpy(extra)}, tmp_path / "d.pt")
    torch.save([torch.from_numpy(image), torch.from_numpy(extra)], tmp_path / "l.pt")
    reports = [rd.scan(model, tmp_path / "d.npz"), rd.scan(model, tmp_path / "d.pt"),
               rd.scan(model, tmp_path / "l.pt"), rd.scan(model, {"image": image, "extra": extra})]
    for r in reports:
        assert r.sites[0].dead == 6 and r.sample["samples"] == 10
    with pytest.raises(UserError, match="no array for input 'extra'"):
        rd.scan(model, {"image": image, "other": extra})


def test_samples_caps_the_data_and_list_of_batches_concatenate() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    batches = [np.ones((5, 4), np.float32), torch.ones(7, 4)]
    assert rd.scan(model, batches).sample["samples"] == 12
    assert rd.scan(model, np.ones((50, 4), np.float32), samples=20).sites[0].counters.samples == 20


def test_synthetic_inputs_are_seeded_and_follow_input_range() -> None:
    spec = [InputSpec("x", (3,))]
    a = Sample("synthetic", spec, 10, seed=1)
    b = Sample("synthetic", spec, 10, seed=1)
    c = Sample("synthetic", spec, 10, seed=2)
    rows = lambda s, bs: np.concatenate([b.arrays[0] for b in s.batches(bs)])  # noqa: E731
    np.testing.assert_array_equal(rows(a, 3), rows(b, 10))
    assert not np.array_equal(rows(a, 10), rows(c, 10))
    u = Sample("synthetic", spec, 100, seed=0, input_range=(2.0, 3.0))
    values = rows(u, 100)
    assert values.min() >= 2.0 and values.max() < 3.0


def test_fixed_batch_pads_the_last_batch_and_counts_only_real_rows() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    program = torch.export.export(model, (torch.randn(8, 4),))  # static batch of 8
    data = np.random.default_rng(0).standard_normal((19, 4)).astype(np.float32)
    report = rd.scan(program, data)
    assert report.sample["batch_size"] == 8
    c = report.sites[0].counters
    assert (c.samples, c.rows) == (19, 19)
    expected = (data @ model[0].weight.detach().numpy().T + model[0].bias.detach().numpy() > 0).sum(0)
    np.testing.assert_array_equal(c.fires, expected)


def test_data_must_fit_the_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with pytest.raises(UserError, match="holds no samples"):
        rd.scan(model, np.zeros((0, 4), np.float32))
    with pytest.raises(UserError, match="not a number"):
        rd.scan(model, np.array([["a"] * 4] * 3))
    with pytest.raises(UserError, match="the model failed on inputs of shape"):
        rd.scan(model, np.zeros((3, 5), np.float32))


def test_a_batch_too_big_for_memory_is_refused_before_allocating() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.ReLU())
    with pytest.raises(UserError, match=r"would need \d+\.\d GiB"):
        rd.scan(model, input_shape=(3, 4096, 4096), batch_size=1024)
