"""One pass over an activation for every per-(sample, neuron) row result.

The scan needs, per row, the sum, the sum of |y|, the count of entries > 0, the minimum
and the maximum. torch has no op that gives them together, and each op is a pass over the
activation: on memory-bound models (MobileNetV2) four or five passes cost 15-20% of the
model, and the exact float64 road that signed kinds (leaky ReLU) took about 6 ns per entry
(benchmarks/README.md). These kernels, compiled once by numba and cached on disk, read
each entry once and cost what one read from memory costs (about 0.17 ns per float32 entry
on one thread here).

The tricks that let the loop vectorize, all exact for finite values:
- Comparisons run on integer keys made from the float's bits, k = b ^ ((b >> 31) & 0x7fff...):
  for b >= 0 the key is the bits, whose integer order is the float order; negative floats'
  bits count down, and the xor turns them around. The same xor maps a key back. So `k > 0`
  is `y > 0` (a denormal counts, as in torch; -0.0 does not), and integer min/max need no
  NaN rules: a float min/max with NaN handling does not vectorize (0.8 ns per entry
  against 0.17). -0.0 reads back as -0.0 == 0.
- Sums accumulate in float64 (one rounding per partial sum of a vector lane). Only
  reassociation is allowed to the compiler ("reassoc"), so a NaN or inf still reaches the
  sum of |y|, where `fold` sees it and counts nothing: the caller then takes its exact
  road, which counts them.

Large activations are split by rows over threads: on torch's own OpenMP team where the
process has one we can run on (openmp_team.py), through a C function that runs the same
kernel on each thread's share, else over a thread pool of our own. Either way each row is
reduced by one thread in one pass, so the results do not depend on the split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..compiled import compiled
from . import openmp_team

_FAST = {"reassoc"}
# Below these a thread costs more than it saves: one of our own (started and joined per
# call), or a worker of torch's OpenMP team (awake right after the op that produced the
# activation). benchmarks/README.md, "The reduction on torch's OpenMP team".
_MIN_ENTRIES_PER_THREAD = 1 << 20
_MIN_ENTRIES_PER_TEAM_THREAD = 1 << 16
_pool: ThreadPoolExecutor | None = None


@dataclass
class RowStats:
    """Per (sample, neuron): float64 sums of y and of |y|, int64 counts of entries > 0, and
    the minimum and maximum as the activation's bits (view them as its float dtype)."""

    sums: np.ndarray
    abs_sums: np.ndarray
    counts: np.ndarray
    lows: np.ndarray
    highs: np.ndarray

    def first(self, samples: int) -> RowStats:
        """The results of the first `samples` samples."""
        return RowStats(*(getattr(self, f.name)[:samples] for f in fields(self)))


@compiled(nogil=True, fastmath=_FAST)
def _neurons_first(values, bits, signed, sign, below_sign, sums, abs_sums, counts, lows, highs):  # pragma: no cover
    """values (rows, positions) -> one result per row. `sign` is the sign bit's position
    and `below_sign` 0x7fff..., both in the bits' own type (so the keys stay that wide).
    Unsigned (values >= 0): the keys are the bits, |y| is y, and abs_sums is not written
    (the branch is hoisted out of the loop: the unsigned loop does half the work)."""
    for r in range(values.shape[0]):
        s = 0.0
        a = 0.0
        c = 0
        lo = bits[r, 0] ^ ((bits[r, 0] >> sign) & below_sign) if signed else bits[r, 0]
        hi = lo
        if signed:
            for p in range(values.shape[1]):
                v = values[r, p]
                b = bits[r, p]
                k = b ^ ((b >> sign) & below_sign)
                s += v
                a += abs(v)
                c += k > 0
                lo = min(lo, k)
                hi = max(hi, k)
            abs_sums[r] = a
            lo ^= (lo >> sign) & below_sign
            hi ^= (hi >> sign) & below_sign
        else:
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


@compiled(nogil=True, fastmath=_FAST)
def _neurons_last(values, bits, signed, sign, below_sign, sums, abs_sums, counts, lows, highs):  # pragma: no cover
    """values (samples, positions, neurons) -> results (samples, neurons); the inner loop
    runs along the neurons, contiguous in memory. Arguments as in _neurons_first."""
    for n in range(values.shape[0]):
        sums[n] = 0.0
        counts[n] = 0
        for c in range(values.shape[2]):
            lows[n, c] = bits[n, 0, c] ^ ((bits[n, 0, c] >> sign) & below_sign) if signed else bits[n, 0, c]
            highs[n, c] = lows[n, c]
        if signed:
            abs_sums[n] = 0.0
            for p in range(values.shape[1]):
                for c in range(values.shape[2]):
                    v = values[n, p, c]
                    b = bits[n, p, c]
                    k = b ^ ((b >> sign) & below_sign)
                    sums[n, c] += v
                    abs_sums[n, c] += abs(v)
                    counts[n, c] += k > 0
                    lows[n, c] = min(lows[n, c], k)
                    highs[n, c] = max(highs[n, c], k)
            for c in range(values.shape[2]):  # keys back to bits
                lows[n, c] ^= (lows[n, c] >> sign) & below_sign
                highs[n, c] ^= (highs[n, c] >> sign) & below_sign
        else:
            for p in range(values.shape[1]):
                for c in range(values.shape[2]):
                    b = bits[n, p, c]
                    sums[n, c] += values[n, p, c]
                    counts[n, c] += b > 0
                    lows[n, c] = min(lows[n, c], b)
                    highs[n, c] = max(highs[n, c], b)


@cache
def bit_key(dtype: np.dtype) -> tuple[Any, Any, Any]:
    """The integer type of a float dtype's bits, the sign bit's place and the bits below it,
    each in that type (so the keys stay that wide)."""
    bits_type = np.int32 if dtype == np.float32 else np.int64
    info = np.iinfo(bits_type)
    return bits_type, bits_type(info.bits - 1), bits_type(info.max)


def row_stats(y3: np.ndarray, red: int, signed: bool = True, threads: int = 1) -> RowStats:
    """Reduce y3 (float32 or float64, at least one entry) along axis `red`: 2 for
    (samples, neurons, positions), 1 for (samples, positions, neurons). Results are
    (samples, neurons). `signed=False` promises entries >= 0 (-0.0 and NaN allowed): the
    faster loop. Large activations are split by sample (or row) over up to `threads`
    threads; the kernels release the GIL."""
    bits_type, sign, below_sign = bit_key(y3.dtype)
    key = (signed, sign, below_sign)
    n, c = y3.shape[0], y3.shape[1 if red == 2 else 2]
    if red == 2 and y3.shape[2] == 1:  # one position per row: vectorize along the neurons
        y3, red = y3.reshape(n, 1, c), 1
    sums = np.empty((n, c))
    out = RowStats(sums, np.empty((n, c)) if signed else sums, np.empty((n, c), np.int64),
                   np.empty((n, c), bits_type), np.empty((n, c), bits_type))
    results = [out.sums, out.abs_sums, out.counts, out.lows, out.highs]
    kernel: Any  # a numba dispatcher
    if red == 2:
        kernel, values = _neurons_first, y3.reshape(n * c, y3.shape[2])
        results = [a.reshape(n * c) for a in results]
    else:
        kernel, values = _neurons_last, y3
    bits = values.view(bits_type)
    team = openmp_team.team() if values.flags.c_contiguous else None  # its C function reads a dense block
    pieces = split_count(values, threads, team)
    if pieces == 1:
        kernel(values, bits, *key, *results)
        return out
    if team is not None:
        shape = (*values.shape, 1)[:3]
        block = np.array([team.thread_number, team.team_size, values.ctypes.data, bits.ctypes.data, *shape,
                          signed, *(r.ctypes.data for r in results)], np.int64)
        team.run(_team_body(kernel, values.dtype).address, block.ctypes.data, pieces)
        return out
    bounds = np.linspace(0, len(values), pieces + 1).astype(int)
    spans = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    parts: list[tuple[Any, ...]] = [(values[s], bits[s], *key, *(r[s] for r in results)) for s in spans]
    futures = [thread_pool().submit(kernel, *part) for part in parts]
    for f in futures:
        f.result()
    return out


def split_count(values: np.ndarray, threads: int, team: Any) -> int:
    """Over how many threads (at most `threads`) to split `values` by its first axis: on
    torch's team when `team` is not None, else on threads of our own."""
    per_thread = _MIN_ENTRIES_PER_THREAD if team is None else _MIN_ENTRIES_PER_TEAM_THREAD
    return max(1, min(threads, values.size // per_thread, len(values)))


def fold(rows: RowStats, dtype: np.dtype, fires: np.ndarray, sample_fires: np.ndarray, abs_sum: np.ndarray,
         low: np.ndarray, high: np.ndarray) -> tuple[float, float] | None:
    """Add one batch's rows into a site's per-neuron running results (in place) and return
    (the batch total, its largest value); None, with nothing added, if a value was NaN or
    inf. One compiled call: a dozen small numpy ops per site and batch cost as much as the
    pass over the activation on a model with many small sites."""
    total, top = _fold(rows.sums, rows.abs_sums, rows.counts, rows.lows.view(dtype), rows.highs.view(dtype),
                       fires, sample_fires, abs_sum, low, high)
    return (total, top) if np.isfinite(total) else None


@compiled(nogil=True)
def _fold(sums, abs_sums, counts, lows, highs, fires, sample_fires, abs_sum, low, high):  # pragma: no cover - compiled
    magnitude = 0.0
    for n in range(sums.shape[0]):
        for c in range(sums.shape[1]):
            magnitude += abs_sums[n, c]
    if not np.isfinite(magnitude):  # a NaN or inf entry, or a float64 overflow: count nothing
        return magnitude, 0.0
    total = 0.0
    top = -np.inf
    for n in range(sums.shape[0]):
        for c in range(sums.shape[1]):
            total += sums[n, c]
            fires[c] += counts[n, c]
            sample_fires[c] += counts[n, c] > 0
            abs_sum[c] += abs_sums[n, c]
            low[c] = min(low[c], lows[n, c])
            high[c] = max(high[c], highs[n, c])
            top = max(top, highs[n, c])
    return total, top


def thread_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(thread_name_prefix="relu-doctor-reduce")
    return _pool


def _address_as_pointer(typingctx: Any, address: Any) -> Any:  # pragma: no cover - compiled
    """pointer(address): an int64 address as a void pointer (numba's carray takes
    pointers, not numbers)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


def _call_at_address(typingctx: Any, address: Any) -> Any:  # pragma: no cover - compiled
    """call_int_function(address): call the C function `int f(void)` at an int64 address.
    Through an address, not a ctypes global, so that the compiled code holds no address of
    this process and numba caches it on disk."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        function = builder.inttoptr(args[0], ir.FunctionType(ir.IntType(32), []).as_pointer())
        return builder.call(function, [])

    return types.int32(types.int64), codegen


pointer: Any = intrinsic(_address_as_pointer)
call_int_function: Any = intrinsic(_call_at_address)


@cache
def _team_body(kernel: Any, dtype: np.dtype) -> Any:
    """A C function `void body(int64 *block)` that runs `kernel` on its thread's share of
    the rows (split along axis 0, as the thread pool splits). The block, written by
    row_stats: the two thread-id functions, the values' and bits' addresses, their shape
    as three numbers (a 2-d shape ends in 1), `signed`, and the five results' addresses.
    Compiled once per kernel and float type, cached on disk like the kernels."""
    value_type = dtype.type
    bits_type, sign, below_sign = bit_key(dtype)
    neurons_first = kernel is _neurons_first

    def body(address):  # pragma: no cover - compiled
        block = carray(address, 13, dtype=np.int64)
        number, size = call_int_function(block[0]), call_int_function(block[1])
        n, p, c = block[4], block[5], block[6]
        first, last = n * number // size, n * (number + 1) // size
        signed = block[7] != 0
        shape = (n, p) if neurons_first else (n, p, c)  # a constant: numba compiles one branch
        rows = (n,) if neurons_first else (n, c)
        views = (carray(pointer(block[2]), shape, dtype=value_type)[first:last],
                 carray(pointer(block[3]), shape, dtype=bits_type)[first:last], signed, sign, below_sign,
                 carray(pointer(block[8]), rows, dtype=np.float64)[first:last],
                 carray(pointer(block[9]), rows, dtype=np.float64)[first:last],
                 carray(pointer(block[10]), rows, dtype=np.int64)[first:last],
                 carray(pointer(block[11]), rows, dtype=bits_type)[first:last],
                 carray(pointer(block[12]), rows, dtype=bits_type)[first:last])
        if neurons_first:  # the kernels by their global names: a dispatcher in the closure defeats the disk cache
            _neurons_first(*views)
        else:
            _neurons_last(*views)

    return compiled(sig=types.void(types.voidptr), compile_with=cfunc)(body)
