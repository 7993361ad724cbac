"""Fused torch kernels that apply a ReLU-family activation inside them.

The activation never surfaces as a call of its own, so each kernel says how to measure
it: the kernel's output itself when that is the activation's output (_add_relu,
_addmm_activation, a one-layer relu RNN), or the layer's math run again from the
kernel's arguments (the encoder layer's feed-forward, a stacked RNN layer by layer).
A kernel that cannot be measured (quantized values, packed stacked RNNs) is listed as
not measured with a warning; a scan never reports "no ReLU" for a model that ran one.

Each measurement returns (activation, tensor, axis tag) triples; the tag follows
kinds/axis.py (None: the tensor follows the kernel's first input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import axis
from .base import Activation

Measured = list[tuple[Activation, Any, int | None]]


class NotMeasured(Exception):
    """This call of a fused kernel holds an activation that cannot be measured (the reason)."""


@dataclass(frozen=True)
class FusedKernel:
    """A kernel that applies an activation inside it, and how to measure that activation."""

    holds: str  # what it fuses, for messages ("linear + relu")
    measure: Callable[[tuple, Mapping[str, Any], Any, bool], Measured] | None
    # (args, kwargs, output, include_smooth) -> what it activated; None: never measurable
    # (args, kwargs, include_smooth) -> the kinds of the sites `measure` reports, read from a
    # graph node without running it (graph formats name and patch sites by them)
    kinds: Callable[[tuple, Mapping[str, Any], bool], list[str]] = lambda a, k, smooth: ["relu"]


def _relu(kind: str = "relu") -> Activation:
    return Activation(kind, {})


def _output(tag: int | None) -> Callable[[tuple, Mapping[str, Any], Any, bool], Measured]:
    """The kernel's output is the relu's output (its neuron axis: `tag`, None to follow the input)."""
    return lambda args, kwargs, out, smooth: [(_relu(), out, tag)]


def _addmm_activation(args: tuple, kwargs: Mapping[str, Any], out: Any, smooth: bool) -> Measured:
    if kwargs.get("use_gelu", False):
        return [(_relu("gelu"), out, axis.LAST)] if smooth else []
    return [(_relu(), out, axis.LAST)]


def _pointwise(attr_index: int) -> Callable[[tuple, Mapping[str, Any], Any, bool], Measured]:
    def measure(args: tuple, kwargs: Mapping[str, Any], out: Any, smooth: bool) -> Measured:
        attr = args[attr_index] if len(args) > attr_index else kwargs.get("attr")
        if attr == "relu":
            return [(_relu(), out, axis.CHANNEL if attr_index == 7 else axis.LAST)]
        if attr in (None, "none", "", "sigmoid", "tanh"):
            return []
        raise NotMeasured(f"its fused {attr!r} activation")
    return measure


def _gelu_or_relu(use_gelu: Any, smooth: bool) -> list[str]:
    if use_gelu:
        return ["gelu"] if smooth else []
    return ["relu"]


def _encoder_layer(args: tuple, kwargs: Mapping[str, Any], out: Any, smooth: bool) -> Measured:
    """aten._transformer_encoder_layer_fwd: the feed-forward's hidden activation, recomputed."""
    import torch
    import torch.nn.functional as F

    names = ("src", "embed_dim", "num_heads", "qkv_weight", "qkv_bias", "proj_weight", "proj_bias", "use_gelu",
             "norm_first", "eps", "norm_weight_1", "norm_bias_1", "norm_weight_2", "norm_bias_2",
             "ffn_weight_1", "ffn_bias_1", "ffn_weight_2", "ffn_bias_2", "mask", "mask_type")
    a = dict(zip(names, args))
    a.update(kwargs)
    if a["use_gelu"] and not smooth:
        return []
    src = a["src"]
    if getattr(src, "is_nested", False):
        raise NotMeasured("a padded (nested tensor) batch")
    width = (a["embed_dim"],)

    def attention(q: Any) -> Any:
        y, _ = torch._native_multi_head_attention(
            q, q, q, a["embed_dim"], a["num_heads"], a["qkv_weight"], a["qkv_bias"], a["proj_weight"],
            a["proj_bias"], a.get("mask"), need_weights=False, mask_type=a.get("mask_type"))
        return y

    if a["norm_first"]:
        x = src + attention(F.layer_norm(src, width, a["norm_weight_1"], a["norm_bias_1"], a["eps"]))
        x = F.layer_norm(x, width, a["norm_weight_2"], a["norm_bias_2"], a["eps"])
    else:
        x = F.layer_norm(src + attention(src), width, a["norm_weight_1"], a["norm_bias_1"], a["eps"])
    hidden = F.linear(x, a["ffn_weight_1"], a["ffn_bias_1"])
    if a["use_gelu"]:
        return [(_relu("gelu"), F.gelu(hidden), axis.LAST)]
    return [(_relu(), torch.relu(hidden), axis.LAST)]


def _rnn_relu(args: tuple, kwargs: Mapping[str, Any], out: Any, smooth: bool) -> Measured:
    """aten.rnn_relu.input: every layer's hidden states (run layer by layer when stacked),
    batch first."""
    import torch

    if len(args) < 9 or not isinstance(args[2], (list, tuple)):  # rnn_relu.data: a packed sequence
        raise NotMeasured("a packed sequence")
    x, hx, params, has_biases, layers, _, _, bidirectional, batch_first = args[:9]

    def batch_major(y: Any) -> Any:
        return y if batch_first else y.transpose(0, 1)

    if layers == 1:
        return [(_relu(), batch_major(out[0]), axis.LAST)]
    per_layer = (4 if has_biases else 2) * (2 if bidirectional else 1)
    directions = 2 if bidirectional else 1
    found: Measured = []
    for layer in range(layers):
        h0 = hx[layer * directions:(layer + 1) * directions]
        weights = list(params[layer * per_layer:(layer + 1) * per_layer])
        x, _ = torch.ops.aten.rnn_relu.input(x, h0, weights, has_biases, 1, 0.0, False, bidirectional, batch_first)
        found.append((_relu(), batch_major(x), axis.LAST))
    return found


def _quantized(args: tuple, kwargs: Mapping[str, Any], out: Any, smooth: bool) -> Measured:
    raise NotMeasured("its quantized values")


# "namespace.name" of the op (TorchScript writes it "namespace::name") -> the kernel
FUSED_KERNELS: dict[str, FusedKernel] = {
    "aten._add_relu": FusedKernel("add + relu", _output(None)),
    "aten._add_relu_": FusedKernel("add + relu", _output(None)),
    "aten._addmm_activation": FusedKernel("linear + relu/gelu", _addmm_activation,
                                           lambda a, k, smooth: _gelu_or_relu(k.get("use_gelu", False), smooth)),
    "aten._transformer_encoder_layer_fwd": FusedKernel(
        "a transformer encoder layer (relu/gelu feed-forward)", _encoder_layer,
        lambda a, k, smooth: _gelu_or_relu(a[7] if len(a) > 7 else k.get("use_gelu", False), smooth)),
    "aten.rnn_relu": FusedKernel("a relu RNN", _rnn_relu,
                                 lambda a, k, smooth: ["relu"] * int(a[4]) if len(a) > 8 else []),
    "aten.rnn_relu_cell": FusedKernel("a relu RNN cell", _output(axis.LAST)),
    "aten.cudnn_convolution_relu": FusedKernel("convolution + relu", _output(axis.CHANNEL)),
    "aten.cudnn_convolution_add_relu": FusedKernel("convolution + add + relu", _output(axis.CHANNEL)),
    "mkldnn._convolution_pointwise": FusedKernel("convolution + activation", _pointwise(7),
                                                 lambda a, k, smooth: ["relu"] if a[7:8] == ("relu",) else []),
    "mkldnn._linear_pointwise": FusedKernel("linear + activation", _pointwise(3),
                                            lambda a, k, smooth: ["relu"] if a[3:4] == ("relu",) else []),
    **{f"quantized.{op}": FusedKernel(f"quantized {op}", _quantized, lambda a, k, smooth: [])
       for op in ("conv1d_relu", "conv2d_relu", "conv3d_relu", "conv_relu", "linear_relu", "linear_relu_dynamic",
                  "linear_relu_fp16", "add_relu", "add_scalar_relu", "mul_relu", "mul_scalar_relu",
                  "batch_norm_relu", "batch_norm2d_relu", "batch_norm3d_relu", "conv_transpose2d_relu")},
}


def fused_kernel(namespace: str, name: str) -> FusedKernel | None:
    return FUSED_KERNELS.get(f"{namespace}.{name}")
