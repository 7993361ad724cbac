"""Interval bounds through an ONNX graph, node by node, in numpy (never imports torch).

Every tensor gets a constant (initializers, Constant nodes, shape arithmetic: folded
with onnx's reference implementation), a float64 box [lo, hi] of the values it can take
for any input in the range, or TOP (unbounded) after an op without a rule. Monotone
ops (Relu, Clip, MaxPool, Reshape, Concat, ...) run the reference op on the lows and on
the highs; affine ops (Conv, Gemm, MatMul, BatchNormalization) use midpoint and radius
with |W|; every rounding step widens the box by the model's own worst-case error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..backends.onnx_graph import default_opset, topological
from .proof import BIG, BN_CONSTANT, TOP, ZERO_WEIGHTS, sum_margin


@dataclass
class Box:
    lo: np.ndarray  # float64
    hi: np.ndarray
    why: tuple[int, np.ndarray, str] | None = None  # (axis, constant-channel mask, rule)


_EXACT = frozenset({"Relu", "Clip", "Max", "Min", "MaxPool", "GlobalMaxPool", "ReduceMax", "ReduceMin", "Reshape",
                    "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Identity", "Slice", "Gather", "Split",
                    "Expand", "Pad", "Tile", "DepthToSpace", "SpaceToDepth"})
_ROUNDED = frozenset({"Cast", "HardSigmoid"})
_LIBM = frozenset({"Sigmoid", "Tanh", "Exp", "Elu", "Softplus", "Erf"})
_AVERAGING = frozenset({"AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"})
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"})
_KEEPS_WHY = frozenset({"Identity", "Dropout", "Cast"})


class OnnxBounds:
    """Propagates boxes through the main graph of `model`; `boxes` maps tensor names to results."""

    def __init__(self, model: onnx.ModelProto, u: float) -> None:
        self.model, self.u = model, u
        self.opset = default_opset(model)
        self.values: dict[str, Any] = {}  # name -> np.ndarray (constant) | Box | TOP
        self.lost: dict[str, int] = {}
        for t in model.graph.initializer:
            self.values[t.name] = numpy_helper.to_array(t)

    def run(self, inputs: dict[str, Box | Any]) -> None:
        self.values.update(inputs)
        graph = self.model.graph
        for i in topological(graph):
            self._node(graph.node[i])

    def _node(self, node: onnx.NodeProto) -> None:
        ins = [self.values.get(n, TOP) if n else None for n in node.input]
        if node.op_type in _RANDOM or any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            outs: list[Any] = [TOP] * len(node.output)
        elif all(v is None or isinstance(v, np.ndarray) for v in ins):
            try:
                outs = list(self._reference(node, ins))
            except Exception:
                outs = [TOP] * len(node.output)
        elif any(v is TOP for v in ins):
            outs = [TOP] * len(node.output)
        else:
            try:
                result = self._rule(node, ins)
            except Exception:  # a rule that cannot handle this node: unbounded, never wrong
                result = TOP
            outs = result if isinstance(result, list) else [result] + [TOP] * (len(node.output) - 1)
            if outs[0] is TOP:
                self.lost[node.op_type] = self.lost.get(node.op_type, 0) + 1
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = _clamped(value) if isinstance(value, Box) else value

    def _reference(self, node: onnx.NodeProto, ins: list[Any]) -> list[Any]:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
        feeds = {n: v for n, v in zip(node.input, ins) if n}
        return list(evaluator.run(None, feeds))

    # -- rules -------------------------------------------------------------------------

    def _rule(self, node: onnx.NodeProto, ins: list[Any]) -> Any:
        op = node.op_type
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Shape":
            return np.array(_box_shape(ins[0]), dtype=np.int64)[attrs.get("start", 0):attrs.get("end")]
        if op == "Size":
            return np.array(int(np.prod(_box_shape(ins[0]))), dtype=np.int64)
        if op == "Dropout":
            return [ins[0], TOP]
        if op in _EXACT or op in _ROUNDED or op in _LIBM:
            if op in ("Elu", "HardSigmoid") and attrs.get("alpha", 1.0) < 0:  # decreasing: not monotone up
                return TOP
            if op == "Cast" and not np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]), np.floating):
                return TOP
            outs = self._monotone(node, ins)
            if op in _ROUNDED or op in _LIBM:
                rel = self.u if op in _ROUNDED else 8 * self.u
                outs = [_widen(b, rel=rel) if isinstance(b, Box) else b for b in outs]
            if op in _KEEPS_WHY and isinstance(outs[0], Box) and isinstance(ins[0], Box):
                outs[0].why = ins[0].why
            return outs
        if op in _AVERAGING:
            return self._averaging(node, ins)
        handler: Callable[..., Any] | None = getattr(self, f"_op_{op}", None)
        return handler(ins, attrs) if handler is not None else TOP

    def _monotone(self, node: onnx.NodeProto, ins: list[Any]) -> list[Any]:
        lo = self._reference(node, [_side(v, "lo") for v in ins])
        hi = self._reference(node, [_side(v, "hi") for v in ins])
        return [Box(a.astype(np.float64), b.astype(np.float64)) if np.issubdtype(a.dtype, np.floating) else TOP
                for a, b in zip(lo, hi)]

    def _averaging(self, node: onnx.NodeProto, ins: list[Any]) -> Any:
        if any(isinstance(v, Box) for v in ins[1:]):
            return TOP
        x = ins[0]
        box = self._monotone(node, ins)[0]
        mag = self._reference(node, [np.maximum(np.abs(x.lo), np.abs(x.hi)), *ins[1:]])[0]
        terms = max(1, x.lo.size // max(box.lo.size, 1))
        return _widen(box, absolute=sum_margin(terms, self.u) * np.abs(mag))

    def _affine(self, x: Box, apply: Callable[[np.ndarray], np.ndarray], absolute: Callable[[np.ndarray], np.ndarray],
                bias: np.ndarray | None, terms: int, zero: np.ndarray | None, axis: int) -> Box:
        center, radius = (x.hi + x.lo) / 2, (x.hi - x.lo) / 2
        mid, rad = apply(center), absolute(radius)
        mag = absolute(np.maximum(np.abs(x.lo), np.abs(x.hi)))
        if bias is not None:
            mid = mid + bias
            mag = mag + np.abs(bias)
        margin = sum_margin(terms, self.u) * mag
        box = _clamped(Box(mid - rad - margin, mid + rad + margin))
        if zero is not None and zero.any():
            box.why = (axis, zero, ZERO_WEIGHTS)
        return box

    def _op_Conv(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        if not isinstance(x, Box) or not isinstance(w, np.ndarray) or isinstance(b, Box):
            return TOP
        w64 = w.astype(np.float64)
        conv = _conv(attrs, w64.shape)
        bias = None if b is None else b.astype(np.float64).reshape([-1] + [1] * (w.ndim - 2))
        zero = np.abs(w64.reshape(w64.shape[0], -1)).sum(1) == 0
        return self._affine(x, lambda t: conv(t, w64), lambda t: conv(t, np.abs(w64)), bias,
                            int(np.prod(w64.shape[1:])), zero, 1)

    def _op_Gemm(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if not isinstance(a, Box) or not isinstance(b, np.ndarray) or isinstance(c, Box):
            return TOP
        if attrs.get("transA", 0):
            a = Box(a.lo.T, a.hi.T)
        w = b.astype(np.float64) * float(attrs.get("alpha", 1.0))
        if attrs.get("transB", 0):
            w = w.T
        bias = None if c is None else c.astype(np.float64) * float(attrs.get("beta", 1.0))
        zero = np.abs(w).sum(0) == 0
        return self._affine(a, lambda t: t @ w, lambda t: t @ np.abs(w), bias, w.shape[0] + 2, zero, 1)

    def _op_MatMul(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        a, b = ins
        if isinstance(a, Box) and isinstance(b, np.ndarray):
            w = b.astype(np.float64)
            zero = np.abs(w).sum(0) == 0 if w.ndim == 2 else None
            return self._affine(a, lambda t: t @ w, lambda t: t @ np.abs(w), None, w.shape[-2], zero, a.lo.ndim - 1)
        if isinstance(b, Box) and isinstance(a, np.ndarray):
            w = a.astype(np.float64)
            sw = np.swapaxes
            box = self._affine(Box(sw(b.lo, -1, -2), sw(b.hi, -1, -2)), lambda t: t @ sw(w, -1, -2),
                               lambda t: t @ np.abs(sw(w, -1, -2)), None, w.shape[-1], None, 0)
            return Box(sw(box.lo, -1, -2), sw(box.hi, -1, -2))
        am, ar = (a.hi + a.lo) / 2, (a.hi - a.lo) / 2
        bm, br = (b.hi + b.lo) / 2, (b.hi - b.lo) / 2
        mid = am @ bm
        rad = np.abs(am) @ br + ar @ np.abs(bm) + ar @ br
        mag = np.maximum(np.abs(a.lo), np.abs(a.hi)) @ np.maximum(np.abs(b.lo), np.abs(b.hi))
        margin = sum_margin(a.lo.shape[-1], self.u) * mag
        return Box(mid - rad - margin, mid + rad + margin)

    def _op_BatchNormalization(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        x, scale, shift, mean, var = ins[:5]
        if not isinstance(x, Box) or attrs.get("training_mode", 0) or any(
                not isinstance(v, np.ndarray) for v in (scale, shift, mean, var)):
            return TOP
        shape = [1, -1] + [1] * (x.lo.ndim - 2)
        eps = float(attrs.get("epsilon", 1e-5))
        sc = scale.astype(np.float64)
        s = (sc / np.sqrt(var.astype(np.float64) + eps)).reshape(shape)
        t, m = shift.astype(np.float64).reshape(shape), mean.astype(np.float64).reshape(shape)
        lo, hi = (x.lo - m) * s, (x.hi - m) * s
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        margin = 16 * self.u * ((np.maximum(np.abs(x.lo), np.abs(x.hi)) + np.abs(m)) * np.abs(s) + np.abs(t))
        zero = np.broadcast_to((sc == 0).reshape(shape), lo.shape)
        t_full = np.broadcast_to(t, lo.shape)
        box = Box(np.where(zero, t_full, lo + t - margin), np.where(zero, t_full, hi + t + margin))
        if (sc == 0).any():
            box.why = (1, sc == 0, BN_CONSTANT)
        return [box, TOP, TOP, TOP, TOP]

    def _op_Add(self, ins: list[Any], attrs: dict[str, Any], sign: float = 1.0) -> Any:
        a, b = _as_box(ins[0]), _as_box(ins[1])
        bl, bh = (b.lo, b.hi) if sign > 0 else (-b.hi, -b.lo)
        return _keep_why(_widen(Box(a.lo + bl, a.hi + bh), rel=self.u), ins)

    def _op_Sub(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        return self._op_Add(ins, attrs, -1.0)

    def _op_Neg(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        return Box(-ins[0].hi, -ins[0].lo)

    def _op_Mul(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        a, b = _as_box(ins[0]), _as_box(ins[1])
        p = np.stack(np.broadcast_arrays(a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi))
        return _keep_why(_widen(Box(p.min(0), p.max(0)), rel=self.u), ins)

    def _op_Div(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        d = _as_box(ins[1])
        if not ((d.lo > 0) | (d.hi < 0)).all() or not np.issubdtype(_dtype(ins[0]), np.floating):
            return TOP
        a = _as_box(ins[0])
        r = Box(1.0 / d.hi, 1.0 / d.lo)
        p = np.stack(np.broadcast_arrays(a.lo * r.lo, a.lo * r.hi, a.hi * r.lo, a.hi * r.hi))
        return _keep_why(_widen(Box(p.min(0), p.max(0)), rel=4 * self.u), ins)

    def _piecewise(self, x: Box, f: Callable[[np.ndarray], np.ndarray]) -> Box:
        flo, fhi = f(x.lo), f(x.hi)
        lo, hi = np.minimum(flo, fhi), np.maximum(flo, fhi)
        spans = (x.lo < 0) & (x.hi > 0)
        return _widen(Box(np.where(spans, np.minimum(lo, 0), lo), np.where(spans, np.maximum(hi, 0), hi)), rel=self.u)

    def _op_LeakyRelu(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        alpha = float(attrs.get("alpha", 0.01))
        return self._piecewise(ins[0], lambda t: np.where(t > 0, t, t * alpha))

    def _op_PRelu(self, ins: list[Any], attrs: dict[str, Any]) -> Any:
        if not isinstance(ins[1], np.ndarray):
            return TOP
        slope = ins[1].astype(np.float64)
        return self._piecewise(ins[0], lambda t: np.where(t > 0, t, t * slope))


def _conv(attrs: dict[str, Any], wshape: tuple[int, ...]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """An N-d convolution (groups, strides, pads, dilations) in float64 numpy."""
    dims = len(wshape) - 2
    strides = list(attrs.get("strides", [1] * dims))
    dilations = list(attrs.get("dilations", [1] * dims))
    groups = int(attrs.get("group", 1))
    kernel = list(attrs.get("kernel_shape", wshape[2:]))
    pads = list(attrs.get("pads", [0] * (2 * dims)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad

    def run(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        p = list(pads)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            for d in range(dims):
                size = x.shape[2 + d]
                out = -(-size // strides[d])
                total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - size)
                small, big = total // 2, total - total // 2
                p[d], p[d + dims] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            p = [0] * (2 * dims)
        xp = np.pad(x, [(0, 0), (0, 0)] + [(p[d], p[d + dims]) for d in range(dims)])
        span = [(kernel[d] - 1) * dilations[d] + 1 for d in range(dims)]
        windows = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + dims)))
        index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
            slice(None, None, dl) for dl in dilations)
        windows = windows[index]  # (N, C, *out, *kernel)
        n, c = x.shape[:2]
        cout = w.shape[0]
        cg, og = c // groups, cout // groups
        outs = []
        for g in range(groups):
            xg = windows[:, g * cg:(g + 1) * cg]
            wg = w[g * og:(g + 1) * og]
            letters = "abcdefgh"[:dims]
            spec = f"nc{''.join('xyz'[:dims])}{letters},oc{letters}->no{''.join('xyz'[:dims])}"
            outs.append(np.einsum(spec, xg, wg, optimize=True))
        return np.concatenate(outs, axis=1) if groups > 1 else outs[0]

    return run


def _box_shape(v: Any) -> tuple[int, ...]:
    return tuple(v.lo.shape) if isinstance(v, Box) else tuple(np.shape(v))


def _dtype(v: Any) -> Any:
    return np.float64 if isinstance(v, Box) else np.asarray(v).dtype


def _side(v: Any, attr: str) -> Any:
    if isinstance(v, Box):
        return getattr(v, attr)
    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
        return v.astype(np.float64)
    return v


def _as_box(v: Any) -> Box:
    if isinstance(v, Box):
        return v
    a = np.asarray(v, dtype=np.float64)
    return Box(a, a)


def _keep_why(box: Box, ins: list[Any]) -> Box:
    boxed = [v for v in ins[:2] if isinstance(v, Box)]
    if len(boxed) == 1 and boxed[0].why is not None and boxed[0].lo.shape == box.lo.shape:
        box.why = boxed[0].why
    return box


def _clamped(box: Box) -> Box:
    lo = np.clip(np.nan_to_num(box.lo, nan=-BIG, posinf=BIG, neginf=-BIG), -BIG, BIG)
    hi = np.clip(np.nan_to_num(box.hi, nan=BIG, posinf=BIG, neginf=-BIG), -BIG, BIG)
    return Box(lo, hi, box.why)


def _widen(box: Box, rel: float = 0.0, absolute: Any = 0.0) -> Box:
    return _clamped(Box(box.lo - rel * np.abs(box.lo) - absolute, box.hi + rel * np.abs(box.hi) + absolute, box.why))
