"""One pass over a non-negative activation for every per-(sample, neuron) row result.

The scan needs, per row, the sum, the count of entries > 0, the minimum and the maximum.
torch has no op that gives them together, and each op is a pass over the activation:
on memory-bound models (MobileNetV2) four or five passes cost 15-20% of the model
(benchmarks/README.md, "What bounds MobileNetV2"). These kernels, compiled once by numba
and cached on disk, read each entry once and cost what one read from memory costs.

The tricks that let the loop vectorize, all exact for finite values >= 0:
- Comparisons run on the float's bits as integers: for x >= 0 the integer order of the
  bits is the float order, so `bits > 0` is `x > 0` (a denormal counts, as in torch) and
  integer min/max need no NaN handling (a float min/max with NaN rules does not vectorize:
  0.8 ns per entry against 0.17). -0.0 has the smallest bits and reads back as -0.0 == 0.
- Sums accumulate in float64 (one rounding per partial sum of a vector lane, not float32).
  Only reassociation is allowed to the compiler ("reassoc"), so a NaN or inf still reaches
  the sum, where the caller sees it and takes the exact road, which counts them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

_FAST = {"reassoc"}
_MIN_ENTRIES_PER_THREAD = 1 << 20  # below this a thread costs more than it saves
_pool: ThreadPoolExecutor | None = None


@dataclass
class RowStats:
    """Per (sample, neuron): float64 sums, int64 counts of entries > 0, and the minimum and
    maximum as the activation's bits (view them as its float dtype to read them)."""

    sums: np.ndarray
    counts: np.ndarray
    lows: np.ndarray
    highs: np.ndarray


@njit(nogil=True, cache=True, fastmath=_FAST)
def _neurons_first(values, bits, sums, counts, lows, highs):  # pragma: no cover - compiled
    """values (rows, positions) -> one result per row."""
    for r in range(values.shape[0]):
        s = 0.0
        c = 0
        lo = bits[r, 0]
        hi = lo
        for p in range(values.shape[1]):
            b = bits[r, p]
            s += values[r, p]
            c += b > 0
            lo = min(lo, b)
            hi = max(hi, b)
        sums[r] = s
        counts[r] = c
        lows[r] = lo
        highs[r] = hi


@njit(nogil=True, cache=True, fastmath=_FAST)
def _neurons_last(values, bits, sums, counts, lows, highs):  # pragma: no cover - compiled
    """values (samples, positions, neurons) -> results (samples, neurons); the inner loop
    runs along the neurons, contiguous in memory."""
    for n in range(values.shape[0]):
        sums[n] = 0.0
        counts[n] = 0
        lows[n] = bits[n, 0]
        highs[n] = bits[n, 0]
        for p in range(values.shape[1]):
            for c in range(values.shape[2]):
                b = bits[n, p, c]
                sums[n, c] += values[n, p, c]
                counts[n, c] += b > 0
                lows[n, c] = min(lows[n, c], b)
                highs[n, c] = max(highs[n, c], b)


def row_stats(y3: np.ndarray, red: int, threads: int = 1) -> RowStats:
    """Reduce y3 (float32 or float64, every entry >= 0 or not finite, at least one entry)
    along axis `red`: 2 for (samples, neurons, positions), 1 for (samples, positions,
    neurons). Results are (samples, neurons). Large activations are split by sample (or
    row) over up to `threads` threads; the kernels release the GIL."""
    bits_type = np.int32 if y3.dtype == np.float32 else np.int64
    n, c = y3.shape[0], y3.shape[1 if red == 2 else 2]
    if red == 2 and y3.shape[2] == 1:  # one position per row: vectorize along the neurons
        y3, red = y3.reshape(n, 1, c), 1
    out = RowStats(np.empty((n, c)), np.empty((n, c), np.int64), np.empty((n, c), bits_type),
                   np.empty((n, c), bits_type))
    if red == 2:
        kernel, values = _neurons_first, y3.reshape(n * c, y3.shape[2])
        parts = [a.reshape(n * c) for a in (out.sums, out.counts, out.lows, out.highs)]
    else:
        kernel, values, parts = _neurons_last, y3, [out.sums, out.counts, out.lows, out.highs]
    bits = values.view(bits_type)
    pieces = max(1, min(threads, values.size // _MIN_ENTRIES_PER_THREAD, len(values)))
    if pieces == 1:
        kernel(values, bits, *parts)
        return out
    bounds = np.linspace(0, len(values), pieces + 1).astype(int)
    spans = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    futures = [_threads().submit(kernel, values[s], bits[s], *(p[s] for p in parts)) for s in spans]
    for f in futures:
        f.result()
    return out


def fold(rows: RowStats, dtype: np.dtype, fires: np.ndarray, sample_fires: np.ndarray, abs_sum: np.ndarray,
         low: np.ndarray, high: np.ndarray) -> tuple[float, float] | None:
    """Add one batch's rows into a site's per-neuron running results (in place) and return
    (the batch total, its largest value); None, with nothing added, if a value was NaN or
    inf. One compiled call: a dozen small numpy ops per site and batch cost as much as the
    pass over the activation on a model with many small sites."""
    total, top = _fold(rows.sums, rows.counts, rows.lows.view(dtype), rows.highs.view(dtype),
                       fires, sample_fires, abs_sum, low, high)
    return None if not np.isfinite(total) else (total, top)


@njit(nogil=True, cache=True)
def _fold(sums, counts, lows, highs, fires, sample_fires, abs_sum, low, high):  # pragma: no cover - compiled
    total = 0.0
    for n in range(sums.shape[0]):
        for c in range(sums.shape[1]):
            total += sums[n, c]
    if not np.isfinite(total):  # a NaN or inf entry, or a float64 overflow: count nothing
        return total, 0.0
    top = -np.inf
    for n in range(sums.shape[0]):
        for c in range(sums.shape[1]):
            fires[c] += counts[n, c]
            sample_fires[c] += counts[n, c] > 0
            abs_sum[c] += sums[n, c]
            low[c] = min(low[c], lows[n, c])
            high[c] = max(high[c], highs[n, c])
            top = max(top, highs[n, c])
    return total, top


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(thread_name_prefix="relu-doctor-reduce")
    return _pool
