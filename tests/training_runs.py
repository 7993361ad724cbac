"""Small deterministic training runs whose ReLUs die at a known step, with a naive record of firing.

A learning-rate spike at KILL_STEP (one step of a much larger rate) pushes some ReLUs
negative on every input; before it, none of the first layer's die. Training is full-batch
(every forward pass sees the whole data set), so "dead over a window" has a plain
answer: the neuron's output was never > 0 at any step of the window. `NaiveRecorder`
computes it with forward hooks on the ReLU modules and a plain `(out > 0).any(...)`,
independently of relu-doctor.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

KILL_STEP = 25
FREEZE_STEP = 45  # from here the rate is 0: the last windows see the final weights
STEPS = 60


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    kill_lr: float  # measured: kills a few neurons without sending the loss to inf


CASES = [Case("mlp", mlp, (8,), 5.0), Case("cnn", cnn, (1, 6, 6), 100.0)]


def data(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, *case.input_shape, generator=g)
    flat = x.flatten(1)
    return x, flat[:, :1] * 2 - flat[:, 1:2]


@dataclass
class NaiveRecorder:
    """Per step, per ReLU module path, which channels were > 0 anywhere (channel axis 1)."""

    model: nn.Module
    steps: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(path))
                        for path, m in self.model.named_modules() if isinstance(m, nn.ReLU)]

    def _hook(self, path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            dims = [d for d in range(out.dim()) if d != 1]
            fired = (out.detach() > 0).any(dim=dims) if dims else out.detach() > 0
            self.current[path] = self.current.get(path, torch.zeros_like(fired)) | fired

        return hook

    def end_step(self) -> None:
        self.steps.append(self.current)
        self.current = {}

    def dead(self, path: str, first: int, last: int) -> list[int]:
        """Neurons of `path` never > 0 on steps first..last."""
        fired = torch.stack([self.steps[s][path] for s in range(first, last + 1)]).any(0)
        return torch.nonzero(~fired).flatten().tolist()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def train(case: Case, watch: Callable[[nn.Module], Any] | None = None, record: bool = False,
          steps: int = STEPS) -> tuple[nn.Module, list[torch.Tensor], Any, NaiveRecorder | None]:
    """Full-batch SGD, one step of case.kill_lr at KILL_STEP, frozen from FREEZE_STEP.

    Returns the model, the losses, the watch and the naive recorder."""
    torch.manual_seed(0)
    model = case.build()
    x, y = data(case)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    recorder = NaiveRecorder(model) if record else None
    w = watch(model) if watch else None
    losses = []
    with w if w is not None else nullcontext():
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = case.kill_lr if step == KILL_STEP else 0.01 if step < FREEZE_STEP else 0.0
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if recorder:
                recorder.end_step()
            if w is not None:
                w.step()
    if recorder:
        recorder.close()
    return model, losses, w, recorder
