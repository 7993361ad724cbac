"""Reduce one batch of a torch activation into a site's counters, on its own device.

Nothing here copies activations or syncs with the host per batch on an accelerator: the
per-(sample, neuron) partials are summed into device tensors, read once at the end.

On CPU this reduction is most of what a scan costs on top of the model
(benchmarks/README.md), so it takes a faster road there:
- The activation is reduced in chunks of about 2 MiB per intra-op thread: the first pass
  over a chunk reads it from memory, the next ones find it in cache, and every temporary
  is chunk-sized. A full-size temporary costs more than the passes themselves (its fresh
  pages fault in). The size was measured (AMD EPYC, 1 MiB L2 per core, 32 MiB L3; 128K
  to 8M elements per thread on MobileNetV2's activations): smaller chunks pay more per-op
  overhead (1 MiB chunks cost 6-9% more), larger ones fall out of the cache.
- An op on a chunk is short (about a hundred microseconds). Split over the intra-op threads
  it runs faster on an idle machine; on a busy one a worker that is not scheduled makes
  every fork/join wait for a time slice (measured on a shared 2-core VM: the scan cost 2-4x
  the model). So a scan reduces one batch with all threads and one with a single thread
  (torch.set_num_threads(1) for the update, then restored), keeps whichever was faster,
  and tries the other again every few batches (Workspace).
- Non-negative kinds (relu, relu6, clip) reduce in the activation's own dtype, with no
  cast of the activation to float64 or int64: per (sample, neuron) row, the sum, the
  count of positive entries as the sum of sign(y) (0 or 1, exact in float32 below 2**24),
  and for bounded kinds the minimum, taken on the bits (for values >= 0 the integer order
  of the bits is the float order, and the integer kernel has no NaN checks: 3x faster on
  short rows). Row sums are float32 (cascade summation, relative error about 1e-7); from
  there everything accumulates in float64 / int64 as on the exact road.
- The minimum is taken on every row, in the chunk while it is in cache. Reading only the
  rows with every entry positive (a row with a zero has minimum 0) looked cheaper, but on
  the benchmark MobileNetV2 44% of its ReLU6 rows are such rows, and gathering them cost
  0.27 s a scan against about 0.06 s for the in-cache minimum.
- Per-neuron extremes (neuron_max / neuron_min, only when the scan asks: `extremes`) are
  taken the same way, per row on the bits in the chunk, then over the rows.
- That road needs finite values: the host checks the batch total once (free on CPU), and
  a batch holding NaN or inf takes the exact road, which counts them.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..stats import COUNTER_NAMES, COUNTERS, SiteCounters

CHUNK_PER_THREAD = 1 << 19  # elements: 2 MiB of float32 (see above)
_EXACT_COUNT_LIMIT = 1 << 24  # float32 holds every integer below this exactly
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}  # the dtypes of the fast road


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
    """What the sites of one scan share on CPU: a reusable buffer for the sign(y) of a
    chunk, and how many threads reduce (see the module's docstring)."""

    PROBE_EVERY = 8  # batches between tries of the slower choice (machines get busy, and idle)

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None
        self.threads = 0  # for the current batch; 0: torch's own setting (no batches announced)
        self._batches = 0
        self._cost: dict[int, float] = {}  # threads -> seconds per element, last batch reduced so
        self._seconds, self._elements = 0.0, 0  # spent in the current batch

    def like(self, a: torch.Tensor) -> torch.Tensor:
        buf = self._buf
        if buf is None or buf.numel() < a.numel() or buf.dtype != a.dtype or buf.device != a.device:
            buf = self._buf = torch.empty(a.numel(), dtype=a.dtype, device=a.device)
        return buf[: a.numel()].view(a.shape)

    def start_batch(self) -> None:
        """Close the measurement of the last batch and choose the threads for the next."""
        if self._elements:
            self._cost[self.threads] = self._seconds / self._elements
        self._seconds, self._elements = 0.0, 0
        available = torch.get_num_threads()
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
        self._work: tuple | None = None  # see _rows

    def update(self, y: torch.Tensor, axis: int) -> None:
        y3, red = as_rows_positions_neurons(y, axis)
        if not self.on_cpu:
            self._update_exact(y3, red)
            return
        available = torch.get_num_threads()
        threads = min(self.workspace.threads or available, available)
        start = time.perf_counter()
        if threads != available:
            torch.set_num_threads(threads)
        try:
            self._update_cpu(y3, red, CHUNK_PER_THREAD * threads)
        finally:
            if threads != available:
                torch.set_num_threads(available)
        self.workspace.spent(time.perf_counter() - start, y3.numel())

    def _update_cpu(self, y3: torch.Tensor, red: int, chunk: int) -> None:
        if (self.nonnegative and y3.dtype in _BITS and y3.numel() and y3.shape[red] < _EXACT_COUNT_LIMIT
                and self._update_fast(y3, red, chunk)):
            return
        step = max(1, chunk // max(1, y3[0].numel()))
        for i in range(0, y3.shape[0], step):  # chunked too: float64 temporaries stay small
            self._update_exact(y3[i: i + step], red)

    def _update_fast(self, y3: torch.Tensor, red: int, chunk: int) -> bool:
        """Non-negative values, chunk by chunk; False (nothing counted) if any is not finite."""
        n, c = y3.shape[0], self.neurons
        bits = _BITS[y3.dtype]
        sums, counts, mins, tops = self._rows(y3, red, bits)
        blocks = _blocks(y3, red, chunk, sums, counts, mins, tops)
        if blocks[0][-1] is not None:  # blocks add up into their rows: start from 0 (and +-inf)
            sums.zero_()
            counts.zero_()
            if mins is not None:
                mins.view(y3.dtype).fill_(float("inf"))
            if tops is not None:
                tops.fill_(torch.iinfo(bits).min)
        maxes = y3.new_empty(len(blocks))
        scratch = self.workspace.like(blocks[0][0])  # the first block is the largest
        for (a, dim, row_sums, row_counts, row_mins, row_tops, sample), m in zip(blocks, maxes.unbind()):
            sign = torch.sign(a, out=scratch[: a.shape[0]])  # 1 where y > 0, else 0 (or -0.0)
            if sample is None:  # the block holds every position of its rows
                torch.sum(a, dim, out=row_sums)
                torch.sum(sign, dim, out=row_counts)
                if row_mins is not None:
                    torch.amin(a.view(bits), dim, out=row_mins)
                if row_tops is not None:
                    torch.amax(a.view(bits), dim, out=row_tops)
            else:  # a block of one sample's positions (a large channel-last sample): add up
                row_sums += a.sum(dim)
                row_counts += sign.sum(dim)
                if row_mins is not None:
                    torch.minimum(row_mins, a.view(bits).amin(dim), out=row_mins)
                if row_tops is not None:
                    torch.maximum(row_tops, a.view(bits).amax(dim), out=row_tops)
            torch.amax(a, out=m)
        abs_sums = sums.view(n, c).sum(0, dtype=torch.float64)
        total = float(abs_sums.sum())  # NaN or inf anywhere (or a float32 overflow) shows here
        if total != total or total in (float("inf"), float("-inf")):
            return False
        counts = counts.view(n, c)
        self.fires += counts.sum(0, dtype=torch.float64).to(torch.int64)
        self.sample_fires += (counts > 0).sum(0)
        self.abs_sum += abs_sums
        self.total += total
        self.max.clamp_(min=float(maxes.amax()))
        if mins is not None:
            low = mins.view(y3.dtype).view(n, c).amin(0).to(torch.float64)
            if self.min is not None:
                self.min = torch.minimum(self.min, low)
            if self.neuron_min is not None:
                self.neuron_min = torch.minimum(self.neuron_min, low)
        if tops is not None and self.neuron_max is not None:
            self.neuron_max = torch.maximum(self.neuron_max, tops.view(y3.dtype).view(n, c).amax(0).to(torch.float64))
        self.rows += n * y3.shape[red]
        self.samples += n
        return True

    def _rows(self, y3: torch.Tensor, red: int, bits: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The per-(sample, neuron) row results (sums, counts, minima and maxima as bits or None:
        minima for bounded kinds or extremes, maxima for extremes), in y3's
        own order: (N*C,) channel-first, (N, C) channel-last. Kept from batch to batch:
        allocating them anew every time would make the model's own large allocations
        fault in fresh pages (measured on a TorchScript MLP: 43k page faults a scan)."""
        key = (y3.shape[0], red, y3.dtype)
        if self._work is None or self._work[0] != key:
            n, c = y3.shape[0], self.neurons
            sums = y3.new_empty((n * c,) if red == 2 else (n, c))
            mins = torch.empty_like(sums).view(bits) if self.min is not None or self.neuron_min is not None else None
            tops = torch.empty_like(sums).view(bits) if self.neuron_max is not None else None
            self._work = (key, sums, torch.empty_like(sums), mins, tops)
        return self._work[1:]

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

        return SiteCounters.of(self.neurons, {name: host(getattr(self, name)) for name in COUNTER_NAMES})


def _blocks(y3: torch.Tensor, red: int, chunk: int, *results: torch.Tensor | None) -> list[tuple]:
    """Blocks of about `chunk` elements as (block, dim to reduce, its rows of each of the
    per-row `results` (None stays None), sample): `sample` is None when the block holds
    every position of its rows (results are written in place), else the block is part of
    that sample (results add up).

    Channel-first (N, C, P): blocks of (sample, neuron) rows of the (N*C, P) matrix.
    Channel-last (N, P, C): blocks of whole samples, or of one sample's positions when a
    sample alone is larger than a chunk.
    """
    if red == 2:
        rows = y3.reshape(-1, y3.shape[2])
        step = max(1, chunk // max(1, rows.shape[1]))
    elif y3[0].numel() <= chunk:
        rows = y3
        step = max(1, chunk // max(1, y3[0].numel()))
    else:
        step = max(1, chunk // max(1, y3.shape[2]))
        return [(part, 0, *(None if r is None else r[i] for r in results), i)
                for i in range(y3.shape[0]) for part in y3[i].split(step)]
    parts = rows.split(step)
    split = [[None] * len(parts) if r is None else r.split(step) for r in results]
    return list(zip(parts, [1] * len(parts), *split, [None] * len(parts)))
