"""Verification's common case in one compiled pass: is a patched site's output y exactly
where(x > 0, x, slope * x), with the plan's slope per neuron?

With numpy the same question took six full-size passes and three temporaries (finiteness,
the product, the comparison, the copy, the bits, the all); on ResNet-18 that was 1 s of a
10.5 s patch (benchmarks/README.md, "patch: the exact check in one pass"). Here each
entry of x and y is read once. numba loads on the first check, not with the patching
package (a patch without verification never needs it).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

_COMPILED_DTYPES = (np.float32, np.float64)


def leak_is_exact(x: np.ndarray, y: np.ndarray, slopes: np.ndarray, axis: int, require_finite: bool) -> bool:
    """True if every entry of y has the bits of where(x > 0, x, slopes * x), slopes along
    the neuron axis `axis` (computed in x's dtype), with one allowance: at x = +-0 a zero of
    either sign passes; and, with `require_finite`, every x is finite. False is no verdict
    on the site: the entry-by-entry checks then say what differs. Compiled for float32 and
    float64; numpy for the rest (float16)."""
    if y.dtype != x.dtype:  # not the same op's input and output: the entry-by-entry checks decide
        return False
    if x.dtype.type not in _COMPILED_DTYPES:
        return _in_numpy(x, y, slopes, axis, require_finite)
    neurons = x.shape[axis]
    outer = int(np.prod(x.shape[:axis]))
    shape = (outer, neurons, x.size // max(1, outer * neurons))
    return bool(_kernel()(x.reshape(shape), y.reshape(shape), np.asarray(slopes, x.dtype), require_finite))


def _in_numpy(x: np.ndarray, y: np.ndarray, slopes: np.ndarray, axis: int, require_finite: bool) -> bool:
    if require_finite and not np.isfinite(x).all():
        return False
    shape = [1] * x.ndim
    shape[axis] = slopes.size
    ref = np.where(x > 0, x, x * slopes.reshape(shape).astype(x.dtype))
    differ = bits(ref) != bits(y)
    return bool(np.all(x[differ] == 0) and np.all(y[differ] == 0))


def bits(a: np.ndarray) -> np.ndarray:
    """The float array's bits, as unsigned integers of its width."""
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


@cache
def _kernel() -> Any:
    from ..compiled import compiled

    @compiled(nogil=True)
    def exact(x, y, slopes, require_finite):  # pragma: no cover - compiled
        """x, y (outer, neurons, inner). Bitwise logic, no early exit, so the inner loop
        vectorizes; a NaN anywhere fails `r == w` (no verdict, as above)."""
        any_input = not require_finite
        ok = True
        for o in range(x.shape[0]):
            for c in range(x.shape[1]):
                s = slopes[c]
                for i in range(x.shape[2]):
                    v = x[o, c, i]
                    w = y[o, c, i]
                    r = v if v > 0 else v * s
                    # equal values have equal bits except +-0: those need equal signs, unless x is +-0
                    same = (r == w) & ((v == 0) | (math.copysign(1.0, r) == math.copysign(1.0, w)))
                    ok &= same & (any_input | math.isfinite(v))
        return ok

    return exact
