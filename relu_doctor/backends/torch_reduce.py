"""Reduce one batch of a torch activation into a site's counters, on its own device.

Nothing here copies activations or syncs with the host per batch on an accelerator: the
per-(sample, neuron) partials are summed into device tensors, read once at the end.

On CPU this reduction is most of what a scan costs on top of the model
(benchmarks/README.md), so it takes a faster road there:
- float32 and float64 activations go through one compiled pass (fused_rows.py) that gives
  every per-(sample, neuron) result at once: the sums of y and |y| in float64, the count of
  entries > 0, the minimum and the maximum, exact. It costs about one read of the
  activation from memory; the torch ops it replaced read it four or five times (eight, in
  float64, for signed kinds).
- That road needs finite values: a NaN or inf shows in the batch's sum of |y|, and such a
  batch takes the exact road, which counts them.
- Loading it costs about 0.5 s once per process, so small activations stay on the exact
  road until that road has cost a quarter of a second (FusedRoad).
- Other dtypes (half, bfloat16) take the exact road, in chunks so that float64 temporaries stay
  small (a full-size temporary costs more than the passes themselves: its fresh pages
  fault in).
- How many threads reduce: as many as torch's ops use, on torch's own OpenMP team where
  the process has one that can run our code (openmp_team.py: Linux). Elsewhere the pass
  splits over threads of its own, which compete with torch's spinning workers, so a scan
  reduces one batch with all of torch's threads and one with a single thread, keeps
  whichever was faster, and tries the other again every few batches (Workspace). On a
  busy machine a worker that is not scheduled makes every fork/join wait for a time slice
  (measured on a shared 2-core VM: the scan cost 2-4x the model with all threads); on
  torch's team the model's own ops wait the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..stats import COUNTER_NAMES, COUNTERS, SiteCounters
from . import openmp_team

CHUNK_PER_THREAD = 1 << 19  # elements of the exact road's float64 chunks: 4 MiB each
_FUSED_DTYPES = (torch.float32, torch.float64)


class FusedRoad:
    """When a process starts using the compiled pass. Importing numba and loading the cached
    kernels costs about 0.5 s once per process (measured: 0.43-0.49 s import, 0.33-0.5 s
    first call, on the shared 2-core machine), more than a small model's whole scan on the
    exact road (the 4-site sample: about 30 ms). So small activations stay on the exact
    road until it has cost `AFTER_SECONDS` in this process; an activation of `AT_ONCE`
    entries or more (3-6 ms a batch on the exact road) loads it at once. `pinned` makes
    every float activation take one road (tests and benchmarks compare them)."""

    AT_ONCE = 1 << 20
    AFTER_SECONDS = 0.25
    kernels: Any = None  # the fused_rows module, once loaded
    exact_seconds = 0.0
    forced: str | None = None  # "fused" or "exact", inside `pinned`

    @classmethod
    def wanted(cls, entries: int) -> Any:
        if cls.forced == "exact":
            return None
        if cls.kernels is None and (cls.forced == "fused" or entries >= cls.AT_ONCE
                                    or cls.exact_seconds >= cls.AFTER_SECONDS):
            from . import fused_rows

            cls.kernels = fused_rows
        return cls.kernels

    @classmethod
    @contextmanager
    def pinned(cls, road: str) -> Iterator[None]:
        saved, cls.forced = cls.forced, road
        try:
            yield
        finally:
            cls.forced = saved


def as_rows_positions_neurons(y: torch.Tensor, axis: int) -> tuple[torch.Tensor, int]:
    """View y (samples first) as 3-D with the neuron axis kept; return it and the axis to reduce.

    Channel-first layouts become (N, C, P) and reduce dim 2; channel-last (N, P, C), dim 1.
    A channels_last (NHWC in memory) activation is viewed channel-last: no copy.
    """
    n = y.shape[0]
    if y.dim() == 1:
        return y.reshape(n, 1, 1), 2
    if axis == 1 and y.dim() > 2 and not y.is_contiguous() and y.movedim(1, -1).is_contiguous():
        return y.movedim(1, -1).reshape(n, -1, y.shape[1]), 1
    if axis == 1:
        return y.reshape(n, y.shape[1], -1), 2
    if axis != y.dim() - 1:
        y = y.movedim(axis, -1)
    return y.reshape(n, -1, y.shape[-1]), 1


class Workspace:
    """What the sites of one scan share on CPU: how many threads reduce (see the module's
    docstring)."""

    PROBE_EVERY = 8  # batches between tries of the slower choice (machines get busy, and idle)

    def __init__(self) -> None:
        self.threads = 0  # for the current batch; 0: torch's own setting (no batches announced)
        self._batches = 0
        self._cost: dict[int, float] = {}  # threads -> seconds per element, last batch reduced so
        self._seconds, self._elements = 0.0, 0  # spent in the current batch

    def start_batch(self) -> None:
        """Close the measurement of the last batch and choose the threads for the next."""
        available = torch.get_num_threads()
        if openmp_team.team() is not None:  # the reduction is one more op on torch's team: nothing to choose
            self.threads = available
            return
        if self._elements:
            self._cost[self.threads] = self._seconds / self._elements
        self._seconds, self._elements = 0.0, 0
        choices = [available, 1] if available > 1 else [1]
        untried = [t for t in choices if t not in self._cost]
        if untried:
            self.threads = untried[0]
        else:
            ranked = sorted(choices, key=self._cost.__getitem__)
            self.threads = ranked[-1] if self._batches % self.PROBE_EVERY == 0 else ranked[0]
        self._batches += 1

    def spent(self, seconds: float, elements: int) -> None:
        self._seconds += seconds
        self._elements += elements


@dataclass
class _FusedTotals:
    """What the fused road adds up on the host: numpy views of the accumulator's per-neuron
    count tensors (CPU: the same memory), and apart from them the extremes (float64, for
    float64 activations), the batch totals and the largest value. Plain numbers and arrays:
    a torch op per site and batch costs more than the fold itself (benchmarks/README.md)."""

    fires: np.ndarray
    sample_fires: np.ndarray
    abs_sum: np.ndarray
    low: np.ndarray
    high: np.ndarray
    total: float = 0.0
    top: float = -np.inf


class TorchSiteAccumulator:
    """Device-side running sums for one site; `counters()` reads them out once.

    Its attributes are the fields of stats.COUNTERS, allocated from that schema: device
    tensors, except rows and samples, which follow from shapes and stay host integers
    (counting them on the device would need no sync, but neither does this)."""

    _HOST = frozenset({"rows", "samples"})
    rows: int
    samples: int
    fires: torch.Tensor
    sample_fires: torch.Tensor
    abs_sum: torch.Tensor
    min: torch.Tensor | None
    total: torch.Tensor
    max: torch.Tensor
    nonfinite: torch.Tensor
    neuron_max: torch.Tensor | None
    neuron_min: torch.Tensor | None

    def __init__(self, neurons: int, device: torch.device, nonnegative: bool, keep_min: bool,
                 workspace: Workspace | None = None, extremes: bool = False) -> None:
        self.neurons = neurons
        self.nonnegative = nonnegative
        # On an accelerator a finiteness check would sync, so it takes the exact road always.
        self.on_cpu = device.type == "cpu"
        self.workspace = workspace or Workspace()
        for f in COUNTERS:  # each at the value of an empty sample (0, -inf or +inf)
            if f.name in self._HOST:
                setattr(self, f.name, int(f.identity))
            elif (f.bounded_only and not keep_min) or (f.on_request and not extremes):
                setattr(self, f.name, None)
            else:
                shape = (neurons,) if f.per_neuron else ()
                setattr(self, f.name, torch.full(shape, f.identity, dtype=getattr(torch, f.dtype), device=device))
        self._fused: _FusedTotals | None = None  # see _update_fused

    def update(self, y: torch.Tensor, axis: int, measured: Any = None) -> None:
        """Add y, whose neuron axis is `axis`; `measured`: y's row results, computed with it
        (fused_clamp.py), so that only their fold remains."""
        y3, red = as_rows_positions_neurons(y, axis)
        if measured is not None and self._fold(FusedRoad.kernels, measured, y3, red):
            return
        if not self.on_cpu:
            self._update_exact(y3, red)
            return
        available = torch.get_num_threads()
        threads = min(self.workspace.threads or available, available)
        start = time.perf_counter()
        if threads != available:
            torch.set_num_threads(threads)
        try:
            self._update_cpu(y3, red, threads)
        finally:
            if threads != available:
                torch.set_num_threads(available)
        self.workspace.spent(time.perf_counter() - start, y3.numel())

    def _update_cpu(self, y3: torch.Tensor, red: int, threads: int) -> None:
        fusable = y3.dtype in _FUSED_DTYPES and y3.numel() > 0
        kernels = FusedRoad.wanted(y3.numel()) if fusable else None
        if kernels is not None and self._update_fused(kernels, y3, red, threads):
            return
        start = time.perf_counter()
        step = max(1, CHUNK_PER_THREAD * threads // max(1, y3[0].numel()))
        for i in range(0, y3.shape[0], step):  # chunked: float64 temporaries stay small
            self._update_exact(y3[i: i + step], red)
        if fusable:
            FusedRoad.exact_seconds += time.perf_counter() - start

    def _update_fused(self, kernels: Any, y3: torch.Tensor, red: int, threads: int) -> bool:
        """Every result in one pass; False (nothing counted) if a value is not finite."""
        rows = kernels.row_stats(y3.detach().numpy(), red, signed=not self.nonnegative, threads=threads)
        return self._fold(kernels, rows, y3, red)

    def _fold(self, kernels: Any, rows: Any, y3: torch.Tensor, red: int) -> bool:
        """Add one batch's row results (of y3); False, with nothing added, if a value was not finite."""
        fused = self._fused
        if fused is None:
            fused = self._fused = _FusedTotals(self.fires.numpy(), self.sample_fires.numpy(), self.abs_sum.numpy(),
                                               np.full(self.neurons, np.inf), np.full(self.neurons, -np.inf))
        folded = kernels.fold(rows, y3.detach().numpy().dtype, fused.fires, fused.sample_fires, fused.abs_sum,
                              fused.low, fused.high)
        if folded is None:
            return False
        total, top = folded
        fused.total += total
        fused.top = max(fused.top, top)
        self.rows += y3.shape[0] * y3.shape[red]
        self.samples += y3.shape[0]
        return True

    def _update_exact(self, y3: torch.Tensor, red: int) -> None:
        """Any values, NaN and inf included, in float64: the reference road."""
        sums = y3.sum(red, dtype=torch.float64)  # (N, C)
        abs_sums = sums if self.nonnegative else y3.abs().sum(red, dtype=torch.float64)
        if not self.on_cpu or not bool(torch.isfinite(abs_sums).all()):
            finite = torch.isfinite(y3)
            self.nonfinite += (~finite).sum()
            positives = (y3 > 0).sum(red)
            sums = torch.where(finite, y3, 0).sum(red, dtype=torch.float64)
            abs_sums = sums if self.nonnegative else torch.where(finite, y3.abs(), 0).sum(red, dtype=torch.float64)
        elif self.nonnegative:
            positives = torch.count_nonzero(y3, dim=red)  # y >= 0 and finite: nonzero == positive
        else:
            positives = (y3 > 0).sum(red)
        self.fires += positives.sum(0)
        self.sample_fires += (positives > 0).sum(0)
        self.abs_sum += abs_sums.sum(0)
        self.total += sums.sum()
        if y3.numel():  # extremes ignore NaN; inf is a real extreme
            nan = torch.isnan(y3)
            self.max = torch.maximum(self.max, torch.where(nan, -torch.inf, y3).amax().to(torch.float64))
            if self.min is not None or self.neuron_min is not None:
                lows = torch.where(nan, torch.inf, y3).amin(red).amin(0).to(torch.float64)
                if self.min is not None:
                    self.min = torch.minimum(self.min, lows)
                if self.neuron_min is not None:
                    self.neuron_min = torch.minimum(self.neuron_min, lows)
            if self.neuron_max is not None:
                highs = torch.where(nan, -torch.inf, y3).amax(red).amax(0).to(torch.float64)
                self.neuron_max = torch.maximum(self.neuron_max, highs)
        self.rows += y3.shape[0] * y3.shape[red]
        self.samples += y3.shape[0]

    def counters(self) -> SiteCounters:
        def host(v: Any) -> Any:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v

        values = {name: host(getattr(self, name)) for name in COUNTER_NAMES}
        fused = self._fused
        if fused is not None:  # the fused road keeps its extremes and totals apart
            values["total"] = values["total"] + fused.total
            values["max"] = np.maximum(values["max"], fused.top)
            for name, extreme, pick in (("min", fused.low, np.minimum), ("neuron_min", fused.low, np.minimum),
                                        ("neuron_max", fused.high, np.maximum)):
                if values[name] is not None:
                    values[name] = pick(values[name], extreme)
        return SiteCounters.of(self.neurons, values)

