"""The one-pass reduction of fused_rows for short float32 rows (up to 1024 positions):
eight rows at once, one per vector lane.

fused_rows' loop vectorizes along a row, 32-64 entries per iteration, then folds its lanes
into one result per row. Rows of 49 positions (MobileNetV2's 7x7 maps, NCHW) hardly enter
that loop and cost 0.38 ns per entry, 196 positions 0.19-0.20, against 0.16-0.17 for long
rows (benchmarks/README.md, "Issue 19").

Here a block of 8 rows is read 8 columns at a time (one 32-byte load per row), transposed
in registers (three rounds of two-input shuffles), and each of the 8 vectors that come out
holds one position of all 8 rows: every vector operation serves 8 rows, and no result is
folded across lanes. Each lane adds its own row's entries in the row's order, one float64
addition per entry, without fast-math flags: a row's sum is the plain sequential float64
sum of its entries, bit for bit (the naive reference in tests/test_fused_rows.py), on every
CPU. (fused_rows' long-row loop reassociates into as many partial sums as the CPU's vectors
hold: a sum as exact, in other bits.) Counts, minima and maxima use fused_rows' integer keys.
Measured (benchmarks/fused_pass.py): 0.20 ns per entry at 49 positions, 0.17-0.19 at 196
to 784; signed kinds 0.23-0.27 against fused_rows' 0.30-0.56.

numba cannot write shuffles, so a block's code is LLVM IR built here and inlined into a
numba loop (numba.extending.intrinsic), cached on disk like fused_rows' kernels.
- Columns past the last multiple of 8: the last 8 columns are read again and only the
  columns not yet added are added (a masked load for rows shorter than 8).
- The last block of an activation with fewer than 8 rows left reads its first row in the
  missing lanes and stores only its own rows.
- A block reads its 8 rows side by side, an order the hardware prefetchers follow poorly
  once the activation is larger than L2: at 14-32 MB, 0.2-0.5 ns per entry at 196-400
  positions against fused_rows' 0.19. So there each step also prefetches, into L2, the
  same columns of the block two ahead (0.16-0.17). Into L1, or a block's lines all at
  once, was slower (0.3-0.8: it fills the queue of misses). Far beyond the caches, in
  torch's memory (4 KB pages; numpy's large arrays get 2 MB pages, where it stays ahead),
  this loop still loses at 196 and 784 positions (147 MB: 0.30 and 0.20 against 0.25 and
  0.18), so rows from 128 positions on take it only in activations of up to 16 MB
  (MobileNetV2's 14x14 ones at batch 32: 2.4-14 MB; its 28x28 expansions, 19 MB, keep
  fused_rows' loop). At 49 positions it wins there too (0.50 against 0.57).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .numba_cache import compiled

ROWS = 8  # rows per block: one 256-bit vector of float32 or int32 keys, one 512-bit of float64 sums
MAX_POSITIONS = 1024  # longer rows keep fused_rows' loop (as fast from about 3000 on, unsigned)
LONGISH = 128  # rows from this long on take this loop only in an activation of up to
LONGISH_BYTES = 16 << 20  # this size: it lost to fused_rows' loop from memory (module docstring)
PREFETCH_BYTES = 4 << 20  # activations (or a thread's share) from this size on prefetch: beyond L2
_PREFETCH_BLOCKS = 2  # how far ahead (of 1, 2 and 4: 2 best at 14 and 32 MB, 4 about as good)

_F32, _F64, _I32, _I64, _I8 = ir.FloatType(), ir.DoubleType(), ir.IntType(32), ir.IntType(64), ir.IntType(8)
_FLOATS, _DOUBLES, _KEYS, _WIDE, _MASK = (ir.VectorType(t, ROWS) for t in (_F32, _F64, _I32, _I64, ir.IntType(1)))
_INT_MAX, _INT_MIN = 2**31 - 1, -(2**31)


def _splat(vector_type: ir.VectorType, value: Any) -> ir.Constant:
    return ir.Constant(vector_type, [value] * ROWS)


def _i64(value: int) -> ir.Constant:
    return ir.Constant(_I64, value)


class _Block:
    """Emits the IR that reduces one block of up to ROWS rows into the output arrays."""

    def __init__(self, builder: ir.IRBuilder, signed: bool) -> None:
        self.b, self.signed = builder, signed
        module = builder.module
        self.fabs = cgutils.get_or_insert_function(module, ir.FunctionType(_DOUBLES, [_DOUBLES]), "llvm.fabs.v8f64")
        # Intrinsic names spell the pointer's type where llvmlite writes typed pointers (LLVM
        # renames them for opaque ones, as it does numba's own llvm.memset.p0i8).
        typed = getattr(ir.types, "ir_layer_typed_pointers_enabled", True)
        self.masked_load = cgutils.get_or_insert_function(
            module, ir.FunctionType(_FLOATS, [_FLOATS.as_pointer(), _I32, _MASK, _FLOATS]),
            "llvm.masked.load.v8f32.p0" + ("v8f32" if typed else ""))
        self.prefetch = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32]),
            "llvm.prefetch.p0" + ("i8" if typed else ""))

    def transpose(self, rows: list[ir.Value]) -> list[ir.Value]:
        """8 vectors (lane = position) -> 8 vectors (lane = row). Each round swaps the
        off-diagonal h x h blocks of every 2h x 2h block: h = 4, 2, 1."""
        rows, h = list(rows), ROWS // 2
        while h:
            keep = ir.Constant(_KEYS, [c if not c & h else ROWS + c - h for c in range(ROWS)])
            take = ir.Constant(_KEYS, [c + h if not c & h else ROWS + c for c in range(ROWS)])
            new = list(rows)
            for j in (j for j in range(ROWS) if not j & h):
                new[j] = self.b.shuffle_vector(rows[j], rows[j + h], keep)
                new[j + h] = self.b.shuffle_vector(rows[j], rows[j + h], take)
            rows, h = new, h // 2
        return rows

    def key(self, bits: ir.Value) -> ir.Value:
        """fused_rows' integer key; it is its own inverse (keys back to bits)."""
        if not self.signed:
            return bits
        b = self.b
        return b.xor(bits, b.and_(b.ashr(bits, _splat(_KEYS, 31)), _splat(_KEYS, _INT_MAX)))

    def add(self, acc: dict[str, ir.Value], column: ir.Value) -> None:
        """One position of every row into the accumulators (allocas, promoted to registers)."""
        b = self.b
        value = b.fpext(column, _DOUBLES)
        b.store(b.fadd(b.load(acc["sum"]), value), acc["sum"])  # no fast-math flags: in order
        if self.signed:
            b.store(b.fadd(b.load(acc["abs"]), b.call(self.fabs, [value])), acc["abs"])
        k = self.key(b.bitcast(column, _KEYS))
        b.store(b.add(b.load(acc["count"]), b.zext(b.icmp_signed(">", k, _splat(_KEYS, 0)), _KEYS)), acc["count"])
        low, high = b.load(acc["low"]), b.load(acc["high"])
        b.store(b.select(b.icmp_signed("<", k, low), k, low), acc["low"])
        b.store(b.select(b.icmp_signed(">", k, high), k, high), acc["high"])

    def load(self, rows: list[ir.Value], column: ir.Value, mask: ir.Value | None = None) -> list[ir.Value]:
        """8 floats of each row from `column` on (only the lanes of `mask`, the rest 0.0)."""
        b, out = self.b, []
        for row in rows:
            at = b.bitcast(b.gep(row, [column]), _FLOATS.as_pointer())
            out.append(b.load(at, align=4) if mask is None else
                       b.call(self.masked_load, [at, ir.Constant(_I32, 4), mask, _splat(_FLOATS, 0.0)]))
        return out

    def emit(self, data: ir.Value, positions: ir.Value, row_stride: ir.Value, first: ir.Value,
             rows_here: ir.Value, ahead: ir.Value, outputs: list[ir.Value]) -> None:
        b = self.b
        base = b.bitcast(data, _I8.as_pointer())
        rows = []
        for j in range(ROWS):  # lanes past the activation's last row read the block's first row
            row = b.select(b.icmp_signed("<", _i64(j), rows_here), b.add(first, _i64(j)), first)
            rows.append(b.bitcast(b.gep(base, [b.mul(row, row_stride)]), _F32.as_pointer()))
        acc = {name: cgutils.alloca_once(b, t) for name, t in
               (("sum", _DOUBLES), ("abs", _DOUBLES), ("count", _KEYS), ("low", _KEYS), ("high", _KEYS))}
        for name, t, start in (("sum", _DOUBLES, 0.0), ("abs", _DOUBLES, 0.0), ("count", _KEYS, 0),
                               ("low", _KEYS, _INT_MAX), ("high", _KEYS, _INT_MIN)):
            b.store(_splat(t, start), acc[name])
        whole = b.udiv(positions, _i64(ROWS))
        with cgutils.for_range(b, whole) as block:
            start = b.mul(block.index, _i64(ROWS))
            with b.if_then(b.icmp_unsigned("!=", ahead, _i64(0))):  # the same columns, `ahead` bytes on
                for row in rows:  # (read, into L2; a prefetch never faults, even past the end)
                    at = b.gep(b.bitcast(b.gep(row, [start]), _I8.as_pointer()), [ahead])
                    b.call(self.prefetch, [at, ir.Constant(_I32, 0), ir.Constant(_I32, 2), ir.Constant(_I32, 1)])
            for column in self.transpose(self.load(rows, start)):
                self.add(acc, column)
        self.tail(acc, rows, positions, b.sub(positions, b.mul(whole, _i64(ROWS))))
        self.store(acc, outputs, first, rows_here)

    def tail(self, acc: dict[str, ir.Value], rows: list[ir.Value], positions: ir.Value, left: ir.Value) -> None:
        """The last `left` (< 8) columns: they come out of the transpose as its last `left`
        vectors, which go through a small buffer to be added in order."""
        b = self.b
        with b.if_then(b.icmp_unsigned(">", left, _i64(0))):
            columns = cgutils.alloca_once(b, _FLOATS, size=ROWS)

            def keep(transposed: list[ir.Value]) -> None:
                for j, vector in enumerate(transposed):
                    b.store(vector, b.gep(columns, [ir.Constant(_I32, j)]))

            with b.if_else(b.icmp_unsigned(">=", positions, _i64(ROWS))) as (long_rows, short_rows):
                with long_rows:
                    keep(self.transpose(self.load(rows, b.sub(positions, _i64(ROWS)))))
                with short_rows:  # lanes ROWS - left .. ROWS - 1 hold the row's entries
                    undefined = ir.Constant(_KEYS, ir.Undefined)
                    lefts = b.insert_element(undefined, b.trunc(left, _I32), ir.Constant(_I32, 0))
                    lefts = b.shuffle_vector(lefts, undefined, _splat(_KEYS, 0))
                    mask = b.icmp_signed(">=", b.add(ir.Constant(_KEYS, list(range(ROWS))), lefts), _splat(_KEYS, ROWS))
                    keep(self.transpose(self.load(rows, b.sub(left, _i64(ROWS)), mask)))
            with cgutils.for_range(b, left) as column:
                self.add(acc, b.load(b.gep(columns, [b.add(b.sub(_i64(ROWS), left), column.index)])))

    def store(self, acc: dict[str, ir.Value], outputs: list[ir.Value], first: ir.Value, rows_here: ir.Value) -> None:
        """sums, abs_sums (signed only), counts, lows, highs of the block's rows."""
        b = self.b
        values = [b.load(acc["sum"]), b.load(acc["abs"]) if self.signed else None,
                  b.zext(b.load(acc["count"]), _WIDE), self.key(b.load(acc["low"])), self.key(b.load(acc["high"]))]
        with b.if_else(b.icmp_signed("==", rows_here, _i64(ROWS))) as (full, partial):
            with full:
                for out, v in zip(outputs, values):
                    if v is not None:
                        b.store(v, b.bitcast(b.gep(out, [first]), v.type.as_pointer()), align=4)
            with partial:
                with cgutils.for_range(b, rows_here) as row:
                    for out, v in zip(outputs, values):
                        if v is not None:
                            b.store(b.extract_element(v, row.index), b.gep(out, [b.add(first, row.index)]))


def _block_intrinsic(signed: bool) -> Any:
    @intrinsic
    def block(typingctx: Any, values: Any, first: Any, rows_here: Any, ahead: Any, sums: Any, abs_sums: Any,
              counts: Any, lows: Any, highs: Any) -> Any:
        """(values (rows, positions) float32 with contiguous rows, first row, rows in the
        block, bytes to prefetch, the five 1-D C-contiguous outputs)."""
        wanted = (types.float32, types.float64, types.float64, types.int64, types.int32, types.int32)
        arrays = (values, sums, abs_sums, counts, lows, highs)
        if any(not isinstance(a, types.Array) or a.dtype != t for a, t in zip(arrays, wanted)) or values.ndim != 2 \
                or any(a.ndim != 1 or a.layout != "C" for a in arrays[1:]):
            raise TypingError("short_rows block: float32 (rows, positions) and C-contiguous 1-D results")
        signature = types.void(values, first, rows_here, ahead, sums, abs_sums, counts, lows, highs)

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
            array = context.make_array(sig.args[0])(context, builder, args[0])
            positions = cgutils.unpack_tuple(builder, array.shape, 2)[1]
            row_stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]
            outputs = [context.make_array(sig.args[i])(context, builder, args[i]).data for i in range(4, 9)]
            _Block(builder, signed).emit(array.data, positions, row_stride, args[1], args[2], args[3], outputs)
            return context.get_dummy_value()

        return signature, codegen

    return block


_unsigned_block, _signed_block = _block_intrinsic(False), _block_intrinsic(True)


def takes(values: Any) -> bool:
    """Whether values (rows, positions) go through this loop rather than fused_rows'."""
    positions = values.shape[1]
    return (values.dtype == np.float32 and positions <= MAX_POSITIONS and values.strides[1] == 4
            and (positions < LONGISH or values.nbytes <= LONGISH_BYTES))


@compiled(nogil=True)
def neurons_first(values, bits, signed, sign, below_sign, sums, abs_sums, counts, lows, highs):  # pragma: no cover
    """fused_rows._neurons_first's arguments and results, for float32 rows whose positions
    are contiguous (values.strides[1] == 4; `bits`, `sign` and `below_sign` unused)."""
    n = values.shape[0]
    if values.strides[1] != 4:
        raise ValueError("short_rows: positions not contiguous")
    ahead = 0  # prefetch: only rows one after the other, in an activation larger than L2
    if values.strides[0] == 4 * values.shape[1] and n * values.strides[0] >= PREFETCH_BYTES:
        ahead = _PREFETCH_BLOCKS * ROWS * values.strides[0]
    for first in range(0, n, ROWS):
        rows_here = min(ROWS, n - first)
        if signed:
            _signed_block(values, first, rows_here, ahead, sums, abs_sums, counts, lows, highs)
        else:
            _unsigned_block(values, first, rows_here, ahead, sums, abs_sums, counts, lows, highs)
