"""Reduce one batch of a torch activation into a site's counters, on its own device.

Nothing here copies activations or syncs with the host per batch on an accelerator: the
per-(sample, neuron) partials are summed into device tensors, read once at the end.
"""

from __future__ import annotations

import numpy as np
import torch

from ..stats import SiteCounters


def as_rows_positions_neurons(y: torch.Tensor, axis: int) -> tuple[torch.Tensor, int]:
    """View y (samples first) as 3-D with the neuron axis kept; return it and the axis to reduce.

    Channel-first layouts become (N, C, P) and reduce dim 2; channel-last (N, P, C), dim 1.
    """
    n = y.shape[0]
    if y.dim() == 1:
        return y.reshape(n, 1, 1), 2
    if axis == 1:
        return y.reshape(n, y.shape[1], -1), 2
    if axis != y.dim() - 1:
        y = y.movedim(axis, -1)
    return y.reshape(n, -1, y.shape[-1]), 1


class TorchSiteAccumulator:
    """Device-side running sums for one site; `counters()` reads them out once."""

    def __init__(self, neurons: int, device: torch.device, nonnegative: bool, keep_min: bool) -> None:
        self.neurons = neurons
        self.nonnegative = nonnegative
        # On CPU a finiteness check costs nothing, so the fast path can take the shortcut
        # of count_nonzero; on an accelerator it would sync, so take the exact path always.
        self.exact_always = device.type != "cpu"
        z = dict(device=device)
        self.rows = 0
        self.samples = 0
        self.fires = torch.zeros(neurons, dtype=torch.int64, **z)
        self.sample_fires = torch.zeros(neurons, dtype=torch.int64, **z)
        self.abs_sum = torch.zeros(neurons, dtype=torch.float64, **z)
        self.min = torch.full((neurons,), float("inf"), dtype=torch.float64, **z) if keep_min else None
        self.total = torch.zeros((), dtype=torch.float64, **z)
        self.max = torch.full((), float("-inf"), dtype=torch.float64, **z)
        self.nonfinite = torch.zeros((), dtype=torch.int64, **z)

    def update(self, y: torch.Tensor, axis: int) -> None:
        y3, red = as_rows_positions_neurons(y, axis)
        sums = y3.sum(red, dtype=torch.float64)  # (N, C)
        abs_sums = sums if self.nonnegative else y3.abs().sum(red, dtype=torch.float64)
        if self.exact_always or not bool(torch.isfinite(abs_sums).all()):
            finite = torch.isfinite(y3)
            self.nonfinite += (~finite).sum()
            positives = (y3 > 0).sum(red)
            sums = torch.where(finite, y3, 0).sum(red, dtype=torch.float64)
            abs_sums = sums if self.nonnegative else torch.where(finite, y3.abs(), 0).sum(red, dtype=torch.float64)
            y3 = torch.where(torch.isnan(y3), 0, y3)  # extremes below ignore NaN (inf stays a real extreme)
        elif self.nonnegative:
            positives = torch.count_nonzero(y3, dim=red)  # y >= 0 and finite: nonzero == positive
        else:
            positives = (y3 > 0).sum(red)
        self.fires += positives.sum(0)
        self.sample_fires += (positives > 0).sum(0)
        self.abs_sum += abs_sums.sum(0)
        self.total += sums.sum()
        if y3.numel():
            self.max = torch.maximum(self.max, y3.amax().to(torch.float64))
            if self.min is not None:
                self.min = torch.minimum(self.min, y3.amin(red).amin(0).to(torch.float64))
        self.rows += y3.shape[0] * y3.shape[red]
        self.samples += y3.shape[0]

    def counters(self) -> SiteCounters:
        def host(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        return SiteCounters(
            neurons=self.neurons, rows=self.rows, samples=self.samples,
            fires=host(self.fires), sample_fires=host(self.sample_fires), abs_sum=host(self.abs_sum),
            min=None if self.min is None else host(self.min),
            total=float(self.total), max=float(self.max), nonfinite=int(self.nonfinite),
        )
