"""The API's `data=` in every form it takes gives the counters of the same samples as one
array; a malformed one is a UserError that says what is wrong, never numpy's ValueError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.errors import UserError

X = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 5), nn.Linear(3, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.a(x) + self.b(y))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU())


def _fires(model: nn.Module, data: Any) -> list[int]:
    return rd.scan(model, data=data, batch_size=2, warn=False).sites[0].counters.fires.tolist()


@pytest.mark.parametrize("form", ["tensor", "list of arrays", "tuple of tensors", "nested lists", "bfloat16"])
def test_every_form_of_one_input_counts_the_same_samples(form: str) -> None:
    data = {"tensor": torch.from_numpy(X), "list of arrays": [X[:4], X[4:]],
            "tuple of tensors": (torch.from_numpy(X[:1]), torch.from_numpy(X[1:])), "nested lists": X.tolist(),
            "bfloat16": torch.from_numpy(X).to(torch.bfloat16)}[form]
    want = X if form != "bfloat16" else torch.from_numpy(X).to(torch.bfloat16).float().numpy()
    assert _fires(_net(), data) == _fires(_net(), want)


def test_batches_of_two_inputs_join_input_by_input() -> None:
    y = X[::-1].copy()
    batches = [(X[:2], y[:2]), (torch.from_numpy(X[2:]), torch.from_numpy(y[2:]))]
    assert _fires(TwoInputs(), batches) == _fires(TwoInputs(), {"x": X, "y": y})


@pytest.mark.parametrize(("data", "message"), [
    ([], "empty list"),
    ({}, "empty dict"),
    ([X[:2], np.zeros((2, 4), np.float32)], r"do not join.*\(2, 3\), \(2, 4\)"),
    ([(X[:2],), (X[:2], X[:2])], "different numbers of inputs"),
    ([X[:2], (X[:2],)], "different numbers of inputs"),
    ([[1.0, 2.0, 3.0], [4.0]], "data= is not an array"),
    (object(), "not numbers"),
    ([X[:2], np.float32(1.0)], "a single number"),
])
def test_malformed_data_is_a_user_error(data: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        rd.scan(_net(), data=data, warn=False)
