"""THE neuron-axis rule (SPEC 4), for both backends.

Each backend follows which layer produced a tensor as a *tag*: the neuron axis, counted
from the front (>= 0) or from the end (< 0). A convolution tags its output CHANNEL
(axis 1), a linear map over the last axis (linear, matmul, mm, bmm, einsum, tensordot,
ONNX MatMul / Gemm / Einsum) tags LAST (axis -1). Ops that move axes (permute,
transpose, movedim, reshape / view / flatten / squeeze / unsqueeze, ONNX Transpose,
Reshape, Flatten, Squeeze, Unsqueeze) carry the tag to where the axis went, and drop it
when the axis is split or merged with another. Any other op passes on the tag of its
first tagged input (batch norm, bias, residual adds, ...). `neuron_axis` turns a tag
into the axis of the activation's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHANNEL, LAST = 1, -1
Tag = int  # a neuron axis: >= 0 from the front, < 0 from the end

# ---- torch (aten overload packet names) ------------------------------------------------------
_TORCH_CHANNEL_PREFIXES = ("convolution", "conv1d", "conv2d", "conv3d", "conv_transpose", "mkldnn_convolution",
                           "cudnn_convolution", "_convolution", "miopen_convolution", "conv_tbc")
_TORCH_LAST = frozenset({"addmm", "mm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation", "einsum",
                         "tensordot", "bilinear", "_trilinear", "addbmm", "_scaled_mm", "mkldnn_linear"})
_TORCH_PERMUTES = frozenset({"permute", "transpose", "transpose_", "swapaxes", "swapaxes_", "swapdims", "swapdims_",
                             "t", "t_", "numpy_T", "mT", "mH", "adjoint", "movedim", "moveaxis"})
_TORCH_RESHAPES = frozenset({"view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten", "squeeze",
                             "squeeze_", "unsqueeze", "unsqueeze_", "view_as", "reshape_as", "expand", "expand_as"})
PRODUCER, LAYOUT, FOLLOWER = "producer", "layout", "follower"


def torch_role(op: str) -> tuple[str, Tag | None]:
    """(role, tag) of an aten op: a producer and its tag, a layout op, or a follower."""
    if op.startswith(_TORCH_CHANNEL_PREFIXES):
        return PRODUCER, CHANNEL
    if op in _TORCH_LAST:
        return PRODUCER, LAST
    if op in _TORCH_PERMUTES or op in _TORCH_RESHAPES:
        return LAYOUT, None
    return FOLLOWER, None


def torch_layout(op: str, tag: Tag, args: tuple, in_shape: Sequence[int], out_shape: Sequence[int]) -> Tag | None:
    """Where the tagged axis of an aten layout op's input is in its output (None: gone)."""
    rank = len(in_shape)
    if op in _TORCH_PERMUTES:
        perm = _torch_perm(op, args, rank)
        return through_permutation(tag, perm) if perm is not None else None
    return through_reshape(tag, in_shape, out_shape)


def _torch_perm(op: str, args: tuple, rank: int) -> list[int] | None:
    order = list(range(rank))
    try:
        if op == "permute":
            return [d % rank for d in args[1]]
        if op in ("numpy_T",):
            return order[::-1]
        if op in ("t", "t_"):
            return order[::-1] if rank == 2 else order
        if op in ("mT", "mH", "adjoint"):
            a, b = rank - 2, rank - 1
        elif op in ("movedim", "moveaxis"):
            src, dst = args[1], args[2]
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            src, dst = [s % rank for s in src], [d % rank for d in dst]
            rest = iter(d for d in order if d not in src)
            placed = dict(zip(dst, src))
            return [placed[i] if i in placed else next(rest) for i in range(rank)]
        else:  # transpose / swapaxes / swapdims (x, a, b)
            a, b = args[1] % rank, args[2] % rank
        order[a], order[b] = order[b], order[a]
        return order
    except (IndexError, TypeError, ZeroDivisionError, StopIteration):
        return None


# ---- ONNX (op types of the default domain) ----------------------------------------------------
_ONNX_CHANNEL = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "DeformConv"})
_ONNX_LAST = frozenset({"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "FusedGemm", "MatMulNBits",
                        "Einsum"})
_ONNX_PERMUTES = frozenset({"Transpose"})
_ONNX_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Identity"})


def onnx_role(op_type: str) -> tuple[str, Tag | None]:
    if op_type in _ONNX_CHANNEL:
        return PRODUCER, CHANNEL
    if op_type in _ONNX_LAST:
        return PRODUCER, LAST
    if op_type in _ONNX_PERMUTES or op_type in _ONNX_RESHAPES:
        return LAYOUT, None
    return FOLLOWER, None


def onnx_layout(op_type: str, tag: Tag, attrs: dict[str, Any], in_shape: Sequence[Any] | None,
                out_shape: Sequence[Any] | None) -> Tag | None:
    """Where the tagged axis of an ONNX layout node's input is in its output (None: gone or unknown)."""
    if op_type in _ONNX_PERMUTES:
        perm = attrs.get("perm")
        if perm is None:  # the default reverses the axes
            if in_shape is None:
                return None
            perm = list(range(len(in_shape)))[::-1]
        return through_permutation(tag, list(perm))
    if in_shape is None or out_shape is None:
        return None
    return through_reshape(tag, in_shape, out_shape)


# ---- the rule, shared ---------------------------------------------------------------------------


def through_permutation(tag: Tag, perm: Sequence[int]) -> Tag | None:
    """The tag after output = input.permute(perm); keeps counting from the same end."""
    rank = len(perm)
    k = tag if tag >= 0 else rank + tag
    if not 0 <= k < rank or k not in perm:
        return None
    new = list(perm).index(k)
    return new if tag >= 0 else new - rank


def through_reshape(tag: Tag, in_shape: Sequence[Any], out_shape: Sequence[Any]) -> Tag | None:
    """The tag after a reshape: kept where every dim up to the axis is unchanged (the axis
    keeps its place from the front), or every dim from it on is (it keeps its place from
    the end); otherwise the axis was merged or split and the tag is gone."""
    rank, out_rank = len(in_shape), len(out_shape)
    k = tag if tag >= 0 else rank + tag
    if not 0 <= k < rank:
        return None
    if k < out_rank and _same(in_shape[:k + 1], out_shape[:k + 1]):
        return k if tag >= 0 else k - out_rank
    tail = rank - k
    if tail <= out_rank and _same(in_shape[k:], out_shape[out_rank - tail:]):
        return out_rank - tail if tag >= 0 else -tail
    return None


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Dims equal and known (a symbolic dim equals only itself; None is unknown)."""
    return len(a) == len(b) and all(x is not None and x == y for x, y in zip(a, b))


def broadcast(tag: Tag, in_rank: int, out_rank: int) -> Tag:
    """A follower's output may have more leading dims than its tagged input (broadcasting)."""
    return tag + (out_rank - in_rank) if tag >= 0 and out_rank > in_rank else tag


NEURON_AXES = ("auto", "channel", "last")  # the values of --neuron-axis (`override` below)


def neuron_axis(rank: int, tag: Tag | None, override: str = "auto") -> int:
    """The neuron axis of an activation output of `rank` dims (batch first).

    Rank <= 2 outputs use axis 1 (0 for rank 1); `override` "channel" / "last" is
    --neuron-axis; else the producer's tag, carried through layout changes, and axis 1
    when there is none (or it points at the batch axis)."""
    if rank <= 2:
        return min(1, rank - 1)
    if override == "channel":
        return 1
    if override == "last":
        return rank - 1
    if tag is None:
        return 1
    k = tag if tag >= 0 else rank + tag
    return k if 1 <= k < rank else 1
