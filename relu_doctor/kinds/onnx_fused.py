"""ONNX nodes that apply a ReLU-family activation inside them (an RNN with Relu
activations, onnxruntime's fused Conv / Gemm).

A relu RNN's hidden states are its output Y, so that node is a site, measured as torch
measures a relu RNN layer: batch first, (batch, seq, directions x hidden), the neurons
last. The others are not measured: the scan lists them with a warning, and never reports
"no ReLU" for a model that has one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

_RELU_NAMES = frozenset({"Relu", "LeakyRelu", "ThresholdedRelu", "Clip", "HardSigmoid"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _key(domain: str, op_type: str) -> tuple[str, str]:
    return ("" if domain == "ai.onnx" else domain, op_type)


def _activations(attrs: Mapping[str, Any]) -> list[str]:
    return [_text(n) for n in attrs.get("activations") or []]


def _activations_attr(attrs: Mapping[str, Any]) -> bool:
    return any(n in _RELU_NAMES for n in _activations(attrs))


def _activation_attr(attrs: Mapping[str, Any]) -> bool:
    return _text(attrs.get("activation")) in _RELU_NAMES


# (domain, op type) -> does this node (by its attributes) hold a ReLU-family activation
ONNX_FUSED: dict[tuple[str, str], Callable[[Mapping[str, Any]], bool]] = {
    ("", "RNN"): _activations_attr,
    ("", "GRU"): _activations_attr,
    ("", "LSTM"): _activations_attr,
    ("com.microsoft", "FusedConv"): _activation_attr,
    ("com.microsoft", "FusedGemm"): _activation_attr,
}
FUSED_OP_TYPES = frozenset(op for _, op in ONNX_FUSED)


def holds_activation(domain: str, op_type: str, attrs: Mapping[str, Any]) -> bool:
    check = ONNX_FUSED.get(_key(domain, op_type))
    return check is not None and check(attrs)


def is_relu_rnn(domain: str, op_type: str, attrs: Mapping[str, Any], outputs: Sequence[str]) -> bool:
    """An RNN node whose every activation is Relu and whose Y (all hidden states) is computed."""
    if _key(domain, op_type) != ("", "RNN") or not outputs or not outputs[0]:
        return False
    names = _activations(attrs)
    return bool(names) and all(n == "Relu" for n in names)  # the default is Tanh
