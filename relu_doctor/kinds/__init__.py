"""THE registry of activation kinds: one record per kind (records.py), and everything
derived from the records.

Everything that needs to know what "a ReLU" is asks here: the torch backend classifies
aten calls (`classify_aten`) and fused kernels (fused.py), graph formats list candidate
nodes (`is_graph_candidate`), the ONNX backend classifies nodes (`classify_onnx`) and
written-out activations (onnx_patterns/), patching asks how a kind is written
(`torch_writer`, `onnx_writer`), and both backends take the neuron axis from axis.py.
Adding an activation kind means adding its record (and its tests).
"""

from __future__ import annotations

from .base import Activation, Kind, OnnxSpelling, TorchSpelling
from .classifiers import ABSENT
from .fused import FUSED_KERNELS, fused_kernel
from .registry import (
    ACTIVATION_MODULES,
    ATEN_ACTIVATION_OPS,
    KINDS,
    ONNX_CANDIDATE_OPS,
    TENSOR_METHODS,
    classify_aten,
    classify_onnx,
    onnx_writer,
    torch_functions,
    torch_op_label,
    torch_writer,
    upper_bound,
)

ATEN = "aten"


def is_graph_candidate(namespace: str, name: str) -> bool:
    """Whether an op (namespace "aten", name "relu_") is one a graph format lists as a
    candidate node: each such node makes exactly one runtime call of the op, so graph
    formats name their sites by aligning candidate nodes with calls in order."""
    return (namespace == ATEN and name in ATEN_ACTIVATION_OPS) or fused_kernel(namespace, name) is not None


def split_op_name(qualified: str) -> tuple[str, str]:
    """"aten::relu" (TorchScript) or "aten.relu" -> ("aten", "relu")."""
    namespace, sep, name = qualified.partition("::")
    if not sep:
        namespace, _, name = qualified.partition(".")
    return namespace, name


__all__ = [
    "ABSENT", "ACTIVATION_MODULES", "ATEN_ACTIVATION_OPS", "FUSED_KERNELS", "KINDS", "ONNX_CANDIDATE_OPS",
    "TENSOR_METHODS", "Activation", "Kind", "OnnxSpelling", "TorchSpelling", "classify_aten", "classify_onnx",
    "fused_kernel", "is_graph_candidate", "onnx_writer", "split_op_name", "torch_functions", "torch_op_label",
    "torch_writer", "upper_bound",
]
