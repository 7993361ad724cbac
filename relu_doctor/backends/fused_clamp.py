"""Apply a ReLU-family clamp and reduce its output in the same pass.

A scan on CPU measures each activation by reading it once more after the model wrote it
(fused_rows.py): on memory-bound models (MobileNetV2) that read is most of what the scan
costs, about 7% of the model on one thread. For the activations that are a clamp of their
input, relu, relu6 and clip (clamp(x, 0, top), hardtanh(x, 0, top), their in-place forms),
the capture computes the activation itself: one pass reads x, writes y and keeps each
(sample, neuron) row's results, so the measurement costs no read of its own.

Exactness: y is what torch writes, bit for bit (tests/test_fused_clamp.py): x where
0 <= x <= top, 0 below, top above; NaN stays NaN and -0.0 stays -0.0, as torch's clamp
kernels keep them. The row results are those of fused_rows.row_stats on y (entries >= 0:
its unsigned loop), read from the registers instead of from memory.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numba import carray, cfunc, types
from numba.extending import intrinsic, register_jitable

from ..compiled import compiled
from . import openmp_team
from .fused_rows import RowStats, bit_key, call_int_function, pointer, split_count, thread_pool

_FAST = {"reassoc"}


def _bits_of(typingctx: Any, value: Any) -> Any:  # pragma: no cover - compiled
    """_bits(v): a float's bits as the signed integer of its width (no memory round trip)."""
    width = 32 if value == types.float32 else 64

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))

    return getattr(types, f"int{width}")(value), codegen


_bits: Any = intrinsic(_bits_of)


@register_jitable(inline="always")
def _clamped(v, zero, top):  # pragma: no cover - compiled
    """clamp(v, 0, top) as torch computes it: NaN and -0.0 pass unchanged."""
    v = zero if v < zero else v
    return top if v > top else v


@register_jitable(inline="always")
def _neurons_first(x, y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    """x, y (rows, positions): y = clamp(x, 0, top); one result per row."""
    for r in range(x.shape[0]):
        lo = _bits(_clamped(x[r, 0], zero, top))
        hi = lo
        s = 0.0
        c = 0
        for p in range(x.shape[1]):
            v = _clamped(x[r, p], zero, top)
            y[r, p] = v
            k = _bits(v)  # v >= 0: the bits order as the values (-0.0 lowest), as in row_stats
            s += v
            c += k > 0
            lo = min(lo, k)
            hi = max(hi, k)
        sums[r] = s
        counts[r] = c
        lows[r] = lo
        highs[r] = hi


@register_jitable(inline="always")
def _neurons_last(x, y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    """x, y (samples, positions, neurons): results (samples, neurons)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[2]):
            lows[n, c] = _bits(_clamped(x[n, 0, c], zero, top))
            highs[n, c] = lows[n, c]
            sums[n, c] = 0.0
            counts[n, c] = 0
        for p in range(x.shape[1]):
            for c in range(x.shape[2]):
                v = _clamped(x[n, p, c], zero, top)
                y[n, p, c] = v
                k = _bits(v)
                sums[n, c] += v
                counts[n, c] += k > 0
                lows[n, c] = min(lows[n, c], k)
                highs[n, c] = max(highs[n, c], k)


# Each loop compiled twice: from x into y, and in place. Given the same array twice, the
# first would check at run time whether x and y overlap, find that they do, and run
# unvectorized (0.8 ns per entry against 0.28); inlined with one array, it vectorizes.


@compiled(nogil=True, fastmath=_FAST)
def _clamp_neurons_first(x, y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    _neurons_first(x, y, zero, top, sums, counts, lows, highs)


@compiled(nogil=True, fastmath=_FAST)
def _clamp_neurons_first_in_place(y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    _neurons_first(y, y, zero, top, sums, counts, lows, highs)


@compiled(nogil=True, fastmath=_FAST)
def _clamp_neurons_last(x, y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    _neurons_last(x, y, zero, top, sums, counts, lows, highs)


@compiled(nogil=True, fastmath=_FAST)
def _clamp_neurons_last_in_place(y, zero, top, sums, counts, lows, highs):  # pragma: no cover - compiled
    _neurons_last(y, y, zero, top, sums, counts, lows, highs)


def clamp_row_stats(x3: np.ndarray, y3: np.ndarray, red: int, top: float, threads: int = 1) -> RowStats:
    """y3 = clamp(x3, 0, top) (top may be inf; y3 may be x3 itself), and the row results of
    y3 along axis `red` as row_stats(y3, red, signed=False) gives them. Both C-contiguous
    float32 or float64 arrays of one shape and at least one entry."""
    bits_type = bit_key(x3.dtype)[0]
    n, c = x3.shape[0], x3.shape[1 if red == 2 else 2]
    if red == 2 and x3.shape[2] == 1:  # one position per row: vectorize along the neurons
        x3, y3, red = x3.reshape(n, 1, c), y3.reshape(n, 1, c), 1
    sums = np.empty((n, c))
    out = RowStats(sums, sums, np.empty((n, c), np.int64), np.empty((n, c), bits_type), np.empty((n, c), bits_type))
    results = [out.sums, out.counts, out.lows, out.highs]
    neurons_first = red == 2
    x2, y2 = (x3.reshape(n * c, -1), y3.reshape(n * c, -1)) if neurons_first else (x3, y3)
    if neurons_first:
        results = [a.reshape(n * c) for a in results]
    in_place = x2.ctypes.data == y2.ctypes.data
    kernel = _KERNELS[neurons_first, in_place]
    arrays = (y2,) if in_place else (x2, y2)
    bounds = (x2.dtype.type(0), x2.dtype.type(top))
    team = openmp_team.team()
    pieces = split_count(x2, threads, team)
    if pieces == 1:
        kernel(*arrays, *bounds, *results)
    elif team is not None:
        shape = (*x2.shape, 1)[:3]
        block = np.array([team.thread_number, team.team_size, x2.ctypes.data, y2.ctypes.data, *shape, 0,
                          *(r.ctypes.data for r in results)], np.int64)
        block[7:8].view(np.float64)[0] = top
        team.run(_team_body(neurons_first, in_place, x2.dtype).address, block.ctypes.data, pieces)
    else:
        edges = np.linspace(0, len(x2), pieces + 1).astype(int)
        spans = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
        futures = [thread_pool().submit(kernel, *(a[s] for a in arrays), *bounds, *(r[s] for r in results))
                   for s in spans]
        for f in futures:
            f.result()
    return out


_KERNELS = {(True, False): _clamp_neurons_first, (True, True): _clamp_neurons_first_in_place,
            (False, False): _clamp_neurons_last, (False, True): _clamp_neurons_last_in_place}


@cache
def _team_body(neurons_first: bool, in_place: bool, dtype: np.dtype) -> Any:
    """A C function `void body(int64 *block)` that runs the kernel on its thread's share of
    the rows. The block, written by clamp_row_stats: the two thread-id functions, x's and
    y's addresses, their shape as three numbers (a 2-d shape ends in 1), `top` as a float64,
    and the four results' addresses. As fused_rows' own team body, cached on disk."""
    value_type = dtype.type
    bits_type = bit_key(dtype)[0]

    def body(address):  # pragma: no cover - compiled
        block = carray(address, 12, dtype=np.int64)
        number, size = call_int_function(block[0]), call_int_function(block[1])
        n, p, c = block[4], block[5], block[6]
        top = value_type(carray(address, 12, dtype=np.float64)[7])
        first, last = n * number // size, n * (number + 1) // size
        shape = (n, p) if neurons_first else (n, p, c)  # constants: numba compiles one branch
        rows = (n,) if neurons_first else (n, c)
        x = carray(pointer(block[2]), shape, dtype=value_type)[first:last]
        y = carray(pointer(block[3]), shape, dtype=value_type)[first:last]
        results = (carray(pointer(block[8]), rows, dtype=np.float64)[first:last],
                   carray(pointer(block[9]), rows, dtype=np.int64)[first:last],
                   carray(pointer(block[10]), rows, dtype=bits_type)[first:last],
                   carray(pointer(block[11]), rows, dtype=bits_type)[first:last])
        # the kernels by their global names: a dispatcher in the closure defeats the disk cache
        if neurons_first and in_place:
            _clamp_neurons_first_in_place(y, value_type(0), top, *results)
        elif neurons_first:
            _clamp_neurons_first(x, y, value_type(0), top, *results)
        elif in_place:
            _clamp_neurons_last_in_place(y, value_type(0), top, *results)
        else:
            _clamp_neurons_last(x, y, value_type(0), top, *results)

    return compiled(sig=types.void(types.voidptr), compile_with=cfunc)(body)
