"""Interval rules per aten op: the box of an op's outputs from the boxes of its inputs.

Ops come in families that share a rule: monotone ops run on the lows and on the highs
(exact, or widened by one rounding or a few ulp of libm); sums, means and average pools
widen by n * u of the magnitudes; affine maps with constant weights (convolution,
linear, matmul, batch norm) use midpoint and radius with |W|; elementwise arithmetic
combines the ends. A tensor without a box is a constant (a parameter, a buffer), used
as a point; an argument whose box is TOP makes the result TOP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from .proof import BN_CONSTANT, TOP, ZERO_WEIGHTS, sum_margin
from .torch_boxes import Box, clamped, f64, widen

_EXACT = frozenset({
    "relu", "relu6", "hardtanh", "clamp", "clamp_min", "clamp_max", "clip", "threshold",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "maximum", "minimum", "amax", "amin", "max", "min",
    "view", "_unsafe_view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "expand", "expand_as",
    "contiguous", "clone", "detach", "alias", "lift_fresh", "lift_fresh_copy", "squeeze", "unsqueeze", "select",
    "slice", "narrow", "cat", "concat", "stack", "split", "split_with_sizes", "chunk", "unbind", "movedim",
    "repeat", "constant_pad_nd", "flip", "roll", "index_select", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "view_as", "reshape_as",
})
_ROUNDED = frozenset({"_to_copy", "to", "type_as", "hardsigmoid"})  # one rounding, monotone
_LIBM = frozenset({"sigmoid", "tanh", "exp", "elu", "softplus", "erf", "log_sigmoid"})  # monotone, a few ulp
_AVERAGING = frozenset({"mean", "sum", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
                        "adaptive_avg_pool2d", "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
                        "_adaptive_avg_pool3d", "upsample_bilinear2d", "upsample_linear1d"})
_IDENTITY_IN_EVAL = frozenset({"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"})
_SHAPE_KEEPING_WHY = frozenset({"clone", "contiguous", "detach", "alias", "_to_copy", "to", "dropout",
                                "feature_dropout", "lift_fresh", "lift_fresh_copy"})


class BoxRules:
    """The rules, reading the boxes the interval mode keeps (tensor -> Box | TOP); `u` is the
    unit roundoff of the model's compute dtype."""

    def __init__(self, boxes: WeakTensorKeyDictionary, u: float) -> None:
        self.boxes = boxes
        self.u = u

    def box(self, v: Any) -> Any:
        """Box | TOP for a tensor computed from the input, else the value itself (a constant)."""
        if isinstance(v, torch.Tensor) and v in self.boxes:
            return self.boxes[v]
        return v

    def apply(self, op: str, func: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        """The box (or a list of boxes, one per output) of `op`'s outputs; TOP without a rule."""
        if any(self.box(t) is TOP for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)):
            return TOP
        pure = _out_of_place(func, op)
        if op in _IDENTITY_IN_EVAL:
            train = args[2] if len(args) > 2 else kwargs.get("train", True)
            return TOP if train else self.box(args[0])
        if op in _EXACT or op in _ROUNDED or op in _LIBM:
            if op == "threshold" and float(args[2] if len(args) > 2 else kwargs["value"]) > float(args[1]):
                return TOP  # not monotone
            if op == "elu" and float(args[1] if len(args) > 1 else kwargs.get("alpha", 1.0)) < 0:
                return TOP
            boxes = self._monotone(pure, args, kwargs)
            if boxes is TOP:
                return TOP
            if op in _ROUNDED or op in _LIBM:
                rel = self.u if op in _ROUNDED else 8 * self.u
                boxes = [widen(b, rel=rel) if b is not TOP else TOP for b in boxes]
            if op in _SHAPE_KEEPING_WHY and len(boxes) == 1 and boxes[0] is not TOP:
                boxes[0].why = self.box(args[0]).why
            return boxes if isinstance(out, (tuple, list)) else boxes[0]
        if op in _AVERAGING:
            return self._averaging(pure, args, kwargs, out)
        handler: Callable[..., Any] | None = getattr(self, f"_op_{op.lstrip('_')}", None)
        return handler(args, kwargs, out) if handler is not None else TOP

    def _monotone(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """An op non-decreasing in every tensor argument: run it on the lows, then on the highs."""
        def side(attr: str) -> Callable[[Any], Any]:
            def pick(v: Any) -> Any:
                b = self.box(v)
                if isinstance(b, Box):
                    return getattr(b, attr)
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    return v.to(torch.float64)
                return v
            return pick

        lo = func(*tree_map(side("lo"), args), **tree_map(side("lo"), kwargs))
        hi = func(*tree_map(side("hi"), args), **tree_map(side("hi"), kwargs))
        los = [t for t in tree_flatten(lo)[0] if isinstance(t, torch.Tensor)]
        his = [t for t in tree_flatten(hi)[0] if isinstance(t, torch.Tensor)]
        return [clamped(Box(a, b)) if a.is_floating_point() else TOP for a, b in zip(los, his)]

    def _averaging(self, func: Any, args: tuple, kwargs: dict, out: Any) -> Any:
        """Means, sums and average pools: monotone, with error n * u of the magnitudes."""
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return TOP
        if any(isinstance(self.box(a), Box) for a in args[1:]):
            return TOP
        x = self.box(args[0])
        box = self._monotone(func, args, kwargs)[0]
        mag = func(torch.maximum(x.lo.abs(), x.hi.abs()), *args[1:], **kwargs)
        terms = max(1, args[0].numel() // max(out.numel(), 1))
        return widen(box, absolute=sum_margin(terms, self.u) * mag.abs())

    # affine maps with constant weights -------------------------------------------------

    def _affine(self, x: Box, apply: Callable[[torch.Tensor], torch.Tensor], absolute: Callable[..., torch.Tensor],
                bias: Any, terms: int, zero_rows: torch.Tensor | None, axis: int) -> Box:
        """x -> apply(x) + bias for a linear `apply`; `absolute` is the same map with |W|."""
        center, radius = (x.hi + x.lo) / 2, (x.hi - x.lo) / 2
        mid, rad = apply(center), absolute(radius)
        mag = absolute(torch.maximum(x.lo.abs(), x.hi.abs()))
        if bias is not None:
            b = f64(bias).reshape([-1] + [1] * (mid.dim() - 1 - axis)) if mid.dim() > 1 else f64(bias)
            mid = mid + b
            mag = mag + b.abs()
        margin = sum_margin(terms, self.u) * mag + rad * 4 * 2.0**-52  # + the float64 mid/rad split
        box = clamped(Box(mid - rad - margin, mid + rad + margin))
        if zero_rows is not None and bool(zero_rows.any()):
            box.why = (axis, zero_rows, ZERO_WEIGHTS)
        return box

    def _op_convolution(self, args: tuple, kwargs: dict, out: Any) -> Any:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding", "groups")
        a = dict(zip(names, args), **kwargs)
        if a.get("transposed"):
            return TOP
        return self._conv(a["input"], a["weight"], a.get("bias"), a["stride"], a["padding"], a["dilation"],
                          a["groups"])

    def _op_conv1d(self, args: tuple, kwargs: dict, out: Any) -> Any:
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        a = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, **dict(zip(names, args)), **kwargs}
        return self._conv(a["input"], a["weight"], a["bias"], a["stride"], a["padding"], a["dilation"], a["groups"])

    _op_conv2d = _op_conv3d = _op_conv1d

    def _conv(self, x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: int) -> Any:
        box = self.box(x)
        if not isinstance(box, Box) or isinstance(self.box(w), Box) or isinstance(self.box(b), Box):
            return TOP
        dims = w.dim() - 2
        conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        wf = f64(w)
        unbatched = box.lo.dim() == dims + 1
        fix = (lambda t: t.unsqueeze(0)) if unbatched else (lambda t: t)

        grouped_2d = dims == 2 and groups > 1 and not isinstance(padding, str)

        def run(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            def f(t: torch.Tensor) -> torch.Tensor:
                if grouped_2d:  # torch's float64 grouped conv is ~50x slower than this im2col
                    y = _grouped_conv2d(fix(t), weight, stride, padding, dilation, groups)
                else:
                    y = conv(fix(t), weight, None, stride, padding, dilation, groups)
                return y.squeeze(0) if unbatched else y
            return f

        zero = wf.reshape(wf.shape[0], -1).abs().sum(1) == 0
        return self._affine(box, run(wf), run(wf.abs()), b, wf[0].numel(), zero, 0 if unbatched else 1)

    def _op_linear(self, args: tuple, kwargs: dict, out: Any) -> Any:
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        box = self.box(x)
        if not isinstance(box, Box) or isinstance(self.box(w), Box) or isinstance(self.box(b), Box):
            return TOP
        wf = f64(w)
        zero = wf.abs().sum(1) == 0
        return self._affine(box, lambda t: t @ wf.T, lambda t: t @ wf.abs().T, b, wf.shape[1], zero, box.lo.dim() - 1)

    def _op_addmm(self, args: tuple, kwargs: dict, out: Any) -> Any:
        bias, x, w = args[:3]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        box = self.box(x)
        if beta != 1 or alpha != 1 or not isinstance(box, Box) or isinstance(self.box(w), Box) \
                or isinstance(self.box(bias), Box):
            return TOP
        wf = f64(w)
        zero = wf.abs().sum(0) == 0
        return self._affine(box, lambda t: t @ wf, lambda t: t @ wf.abs(), bias, wf.shape[0], zero, 1)

    def _op_mm(self, args: tuple, kwargs: dict, out: Any) -> Any:
        a, b = self.box(args[0]), self.box(args[1])
        if isinstance(a, Box) and not isinstance(b, Box):
            wf = f64(args[1])
            return self._affine(a, lambda t: t @ wf, lambda t: t @ wf.abs(), None, wf.shape[-2],
                                wf.abs().sum(-2) == 0 if wf.dim() == 2 else None, a.lo.dim() - 1)
        if isinstance(b, Box) and not isinstance(a, Box):
            wf = f64(args[0])
            terms = wf.shape[-1]
            box = self._affine(Box(b.lo.transpose(-1, -2), b.hi.transpose(-1, -2)), lambda t: t @ wf.transpose(-1, -2),
                               lambda t: t @ wf.abs().transpose(-1, -2), None, terms, None, 0)
            return Box(box.lo.transpose(-1, -2), box.hi.transpose(-1, -2))
        return self._interval_matmul(a, b)

    _op_matmul = _op_bmm = _op_mm

    def _interval_matmul(self, a: Box, b: Box) -> Box:
        """Both factors bounded: midpoint-radius product (Rump), plus the rounding margin."""
        am, ar = (a.hi + a.lo) / 2, (a.hi - a.lo) / 2
        bm, br = (b.hi + b.lo) / 2, (b.hi - b.lo) / 2
        mid = am @ bm
        rad = am.abs() @ br + ar @ bm.abs() + ar @ br
        mag = torch.maximum(a.lo.abs(), a.hi.abs()) @ torch.maximum(b.lo.abs(), b.hi.abs())
        margin = sum_margin(a.lo.shape[-1], self.u) * mag
        return clamped(Box(mid - rad - margin, mid + rad + margin))

    def _op_batch_norm(self, args: tuple, kwargs: dict, out: Any) -> Any:
        names = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
        a = dict(zip(names, args), **kwargs)
        return self._bn(a["input"], a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"],
                        bool(a.get("training")), float(a["eps"]))

    def _op_native_batch_norm(self, args: tuple, kwargs: dict, out: Any) -> Any:
        box = self._op_batch_norm(args, kwargs, out)
        return [box, TOP, TOP]

    def _op_native_batch_norm_legit_no_training(self, args: tuple, kwargs: dict, out: Any) -> Any:
        x, w, b, mean, var, _momentum, eps = (list(args) + [None] * 7)[:7]
        return [self._bn(x, w, b, mean, var, False, float(eps)), TOP, TOP]

    def _bn(self, x: Any, w: Any, b: Any, mean: Any, var: Any, training: bool, eps: float) -> Any:
        box = self.box(x)
        if training or mean is None or not isinstance(box, Box) or any(
                isinstance(self.box(t), Box) for t in (w, b, mean, var)):
            return TOP
        c = box.lo.shape[1]
        scale = f64(w) if w is not None else torch.ones(c, dtype=torch.float64)
        shift = f64(b) if b is not None else torch.zeros(c, dtype=torch.float64)
        invstd = 1.0 / torch.sqrt(f64(var) + eps)
        m = f64(mean)
        shape = [1, c] + [1] * (box.lo.dim() - 2)
        s, t, m_ = (scale * invstd).reshape(shape), shift.reshape(shape), m.reshape(shape)
        lo, hi = (box.lo - m_) * s, (box.hi - m_) * s
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        mag = (torch.maximum(box.lo.abs(), box.hi.abs()) + m_.abs()) * s.abs() + t.abs()
        margin = 16 * self.u * mag  # (x - mean) * invstd * w + b: a handful of roundings
        # an exact zero scale gives exactly the shift, whatever x is (0 * x == 0 for finite x)
        zero = (scale == 0).reshape(shape).expand_as(lo)
        lo = torch.where(zero, t.expand_as(lo), lo + t - margin)
        hi = torch.where(zero, t.expand_as(hi), hi + t + margin)
        result = clamped(Box(lo, hi))
        if bool((scale == 0).any()):
            result.why = (1, scale == 0, BN_CONSTANT)
        return result

    # elementwise arithmetic ----------------------------------------------------------

    def _op_add(self, args: tuple, kwargs: dict, out: Any, sign: float = 1.0) -> Any:
        alpha = float(kwargs.get("alpha", args[2] if len(args) > 2 else 1)) * sign
        a, b = self._as_box(args[0]), self._as_box(args[1])
        bl, bh = (b.lo * alpha, b.hi * alpha) if alpha >= 0 else (b.hi * alpha, b.lo * alpha)
        box = widen(clamped(Box(a.lo + bl, a.hi + bh)), rel=2 * self.u)  # alpha * b, then + a
        return self._keep_why(box, args, out)

    def _op_sub(self, args: tuple, kwargs: dict, out: Any) -> Any:
        return self._op_add(args, kwargs, out, -1.0)

    def _op_rsub(self, args: tuple, kwargs: dict, out: Any) -> Any:
        return self._op_add((args[1], args[0], *args[2:]), kwargs, out, -1.0)

    def _op_neg(self, args: tuple, kwargs: dict, out: Any) -> Any:
        a = self._as_box(args[0])
        return Box(-a.hi, -a.lo)

    def _op_mul(self, args: tuple, kwargs: dict, out: Any) -> Any:
        a, b = self._as_box(args[0]), self._as_box(args[1])
        products = torch.stack(torch.broadcast_tensors(a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi))
        box = widen(clamped(Box(products.amin(0), products.amax(0))), rel=self.u)
        return self._keep_why(box, args, out)

    def _op_div(self, args: tuple, kwargs: dict, out: Any) -> Any:
        if kwargs.get("rounding_mode") is not None:
            return TOP
        d = self._as_box(args[1])
        if not bool(((d.lo > 0) | (d.hi < 0)).all()):
            return TOP
        inverse = Box(1.0 / d.hi, 1.0 / d.lo)
        a = self._as_box(args[0])
        products = torch.stack(torch.broadcast_tensors(a.lo * inverse.lo, a.lo * inverse.hi, a.hi * inverse.lo,
                                                       a.hi * inverse.hi))
        box = widen(clamped(Box(products.amin(0), products.amax(0))), rel=4 * self.u)
        return self._keep_why(box, args, out)

    def _piecewise(self, x: Box, f: Callable[[torch.Tensor], torch.Tensor]) -> Box:
        """f linear on each side of 0 (leaky, prelu): extremes at the ends or at 0."""
        flo, fhi = f(x.lo), f(x.hi)
        lo, hi = torch.minimum(flo, fhi), torch.maximum(flo, fhi)
        spans = (x.lo < 0) & (x.hi > 0)
        lo = torch.where(spans, torch.minimum(lo, torch.zeros_like(lo)), lo)
        hi = torch.where(spans, torch.maximum(hi, torch.zeros_like(hi)), hi)
        return widen(Box(lo, hi), rel=self.u)

    def _op_leaky_relu(self, args: tuple, kwargs: dict, out: Any) -> Any:
        slope = float(args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
        return self._piecewise(self.box(args[0]), lambda t: torch.where(t > 0, t, t * slope))

    def _op_rrelu(self, args: tuple, kwargs: dict, out: Any) -> Any:
        a = (list(args) + [1 / 8, 1 / 3, False])[:4]
        if a[3] or kwargs.get("training"):
            return TOP
        slope = (float(a[1]) + float(a[2])) / 2
        return self._piecewise(self.box(args[0]), lambda t: torch.where(t > 0, t, t * slope))

    def _op_prelu(self, args: tuple, kwargs: dict, out: Any) -> Any:
        x = self.box(args[0])
        w = f64(args[1])
        if w.numel() > 1 and x.lo.dim() >= 2:
            w = w.reshape([1, -1] + [1] * (x.lo.dim() - 2))
        return self._piecewise(x, lambda t: torch.where(t > 0, t, t * w))

    def _op_prelu_kernel(self, args: tuple, kwargs: dict, out: Any) -> Any:
        x = self.box(args[0])
        w = f64(args[1])
        return self._piecewise(x, lambda t: torch.where(t > 0, t, t * w))

    # helpers ---------------------------------------------------------------------------

    def _as_box(self, v: Any) -> Box:
        b = self.box(v)
        if isinstance(b, Box):
            return b
        t = f64(v) if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=torch.float64)
        return Box(t, t)

    def _keep_why(self, box: Box, args: tuple, out: Any) -> Box:
        """A bias add or a scale by a constant keeps which channels are constant, and why."""
        boxed = [self.box(a) for a in args[:2] if isinstance(self.box(a), Box)]
        if len(boxed) == 1 and boxed[0].why is not None and tuple(boxed[0].lo.shape) == tuple(box.lo.shape):
            box.why = boxed[0].why
        return box


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _grouped_conv2d(x: torch.Tensor, w: torch.Tensor, stride: Any, padding: Any, dilation: Any,
                    groups: int) -> torch.Tensor:
    """A grouped 2-d convolution as unfold + einsum (the same sums, in float64)."""
    n, _, h, width = x.shape
    out, per_group, kh, kw = w.shape
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    cols = F.unfold(x, (kh, kw), dilation=d, padding=p, stride=s)
    cols = cols.reshape(n, groups, per_group * kh * kw, cols.shape[-1])
    y = torch.einsum("ngkl,gok->ngol", cols, w.reshape(groups, out // groups, per_group * kh * kw))
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (width + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    return y.reshape(n, out, ho, wo)


def _out_of_place(func: Any, op: str) -> Any:
    """The out-of-place overload of an in-place op (relu_ -> relu): boxes are never written in place."""
    name = func._overloadpacket.__name__
    if name == op:
        return func
    packet = getattr(torch.ops.aten, op)
    return getattr(packet, func._overloadname, packet.default)

