"""torch.export programs run without `program.module()` where that is exact (backends/torch_program.py).

The reference everywhere is torch's own `program.module()`: the same outputs, the same
buffers after the call, the same refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import relu_doctor as rd
from relu_doctor.backends.torch import prepare

CPU = torch.device("cpu")


class _TwoOutputs(nn.Module):
    """Weights, a buffer, a non-persistent buffer, a constant tensor; a dict and tuple out."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.register_buffer("shift", torch.tensor([0.5, -0.5, 0.0]))
        self.register_buffer("scale", torch.tensor(2.0), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, object]:
        h = torch.relu(self.lin(x) + self.shift) * self.scale
        return {"h": h, "pair": (h.sum(1), torch.relu(y) + torch.tensor(1.0))}


def _inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, 4, generator=g), torch.randn(batch, 2, generator=g)


def _same(a: object, b: object) -> None:
    flat_a, spec_a = torch.utils._pytree.tree_flatten(a)
    flat_b, spec_b = torch.utils._pytree.tree_flatten(b)
    assert spec_a == spec_b
    assert all(torch.equal(u, v) for u, v in zip(flat_a, flat_b, strict=True))


def test_a_plain_program_runs_its_graph_with_the_outputs_of_module() -> None:
    program = torch.export.export(_TwoOutputs().eval(), _inputs(5))
    forward = prepare(program, CPU).forward
    assert forward.direct
    with torch.inference_mode():
        _same(forward(*_inputs(5)), program.module()(*_inputs(5)))


def test_dynamic_dims_run_directly_within_their_guards_and_as_module_does_outside() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    program = torch.export.export(model, (torch.randn(5, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=2, max=9)},))
    forward = prepare(program, CPU).forward
    assert forward.direct
    with torch.inference_mode():
        for rows in (1, 2, 9):  # 1: outside the range, yet module() runs it (so does forward)
            x = torch.randn(rows, 4)
            assert torch.equal(forward(x), program.module()(x))
        for bad in (torch.randn(10, 4), torch.randn(3, 5)):  # beyond the range; a static dim
            with pytest.raises(Exception) as theirs:
                program.module()(bad)
            with pytest.raises(type(theirs.value)):
                forward(bad)


class _Counting(nn.Module):
    """A buffer the forward pass mutates (in place in export's graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return torch.relu(x) + self.calls


@pytest.mark.parametrize("decomposed", [False, True])
def test_a_mutated_buffer_is_the_programs_own_either_way(decomposed: bool) -> None:
    """forward and module() update one buffer, the program's: each call sees the last.
    Export's graph mutates it in place; decomposed, the graph returns the new value, which
    module() copies back: that program keeps module()."""
    program = torch.export.export(_Counting(), (torch.randn(2, 3),))
    if decomposed:
        program = program.run_decompositions()
    forward = prepare(program, CPU).forward
    assert forward.direct is not decomposed
    x = torch.randn(2, 3)
    with torch.inference_mode():
        outs = [forward(x), program.module()(x), forward(x)]
    for calls, out in enumerate(outs, 1):
        assert torch.equal(out, torch.relu(x) + float(calls))
    assert float(program.state_dict["calls"]) == 3


def test_a_plain_program_is_scanned_without_building_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted answer (lin's neuron 1 never fires) from the graph alone."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = -1
    program = torch.export.export(model, (torch.randn(8, 4),))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("program.module() was built")

    monkeypatch.setattr(torch.export.ExportedProgram, "module", refuse)
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    report = rd.scan(program, x, batch_size=8)
    (site,) = report.sites
    assert site.name == "1" and site.dead_indices == [1]
    fires = (x @ model[0].weight.detach().numpy().T + model[0].bias.detach().numpy() > 0).sum(0)
    assert [int(f) for f in site.counters.fires] == [int(f) for f in fires]
