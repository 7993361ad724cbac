"""Leave a model exactly as it was around a probe scan: training flags, buffers, RNG, requires_grad.

A probe runs the model in eval mode under inference_mode, which by itself changes no
parameter and no BatchNorm statistic; this guard also restores what a model's own code
might touch (a buffer updated in forward, a random draw), so that the training run goes on
bit for bit as if no probe had run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def preserved(model: torch.nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    with torch.no_grad():
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
        for p, requires in grads:
            p.requires_grad_(requires)
        with torch.no_grad():
            for b, saved in buffers:
                if not torch.equal(b, saved):
                    b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
