"""torch.compile'd models give the answer the same model gives uncompiled: scan() and watch()
of a compiled model (torch.compile(model), and module.compile() in place) against the
plain model, site by site. Compiled code dispatches no aten op for the capture to see, and
dynamo traced the capture's own hooks (watch() of a compiled model raised inside dynamo);
both run eagerly while measured (backends/torch_eager.py). The quick tier uses dynamo's
"eager" backend (dynamo and its wrapper, no code generation); the slow tier inductor, the
default, which compiles C++ kernels."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import relu_doctor as rd

DEAD = [1, 4]
BACKENDS = ["eager", pytest.param("inductor", marks=pytest.mark.slow)]


def planted() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight[DEAD] = 0
        model[0].bias[DEAD] = -1
    return model


def compiled_whole(model: nn.Module, backend: str) -> nn.Module:
    return torch.compile(model, backend=backend)


def compiled_in_place(model: nn.Module, backend: str) -> nn.Module:
    model.compile(backend=backend)
    return model


WAYS = [compiled_whole, compiled_in_place]


def sites(report: rd.Report) -> list[tuple[str, str, list[int], list[int]]]:
    return [(s.name, s.kind, s.counters.fires.tolist(), s.counters.sample_fires.tolist()) for s in report.sites]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compile_", WAYS)
def test_scan_of_a_compiled_model_is_the_plain_models(backend: str, compile_: Callable) -> None:
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    want = rd.scan(planted(), data=x, batch_size=16, warn=False)
    model = compile_(planted(), backend)
    model(torch.from_numpy(x[:16]))  # compiled before the scan, as a user's model would be
    got = rd.scan(model, data=x, batch_size=16, warn=False)
    assert sites(got) == sites(want)
    assert got.sites[0].dead_indices == DEAD


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compile_", WAYS)
def test_watch_of_a_compiled_model_is_the_plain_models(backend: str, compile_: Callable) -> None:
    batches = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(6)]

    def train(model: nn.Module) -> list[rd.Report]:
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the same weights in both runs
        with rd.watch(model, every=3, window=2) as w:
            for x in batches:
                loss = model(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                w.step()
        return w.reports

    plain = planted()
    want = train(plain)
    got = train(compile_(copy.deepcopy(plain), backend))
    assert [r.sample["steps"] for r in got] == [r.sample["steps"] for r in want] == [[0, 1], [3, 4]]
    assert [sites(r) for r in got] == [sites(r) for r in want]
    assert got[0].sites[0].dead_indices == DEAD
