"""Lookup tables derived from the records, and the classification every backend asks."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Activation, AtenClassifier, Kind, OnnxClassifier
from .records import RECORDS

KINDS: dict[str, Kind] = {k.name: k for k in RECORDS}

# Activation modules whose forward is the activation itself: a call of one is a
# "module site" named by the module's path; any other call is functional.
ACTIVATION_MODULES = frozenset(m for k in RECORDS for m in k.torch.modules)


def _by_op(pairs: Sequence[tuple[str, Any]]) -> dict[str, tuple[Any, ...]]:
    table: dict[str, tuple[Any, ...]] = {}
    for op, classifier in pairs:
        table[op] = (*table.get(op, ()), classifier)
    return table


_ATEN: dict[str, tuple[AtenClassifier, ...]] = _by_op([(op, fn) for k in RECORDS for op, fn in k.torch.aten.items()])
_ONNX: dict[str, tuple[OnnxClassifier, ...]] = _by_op([(op, fn) for k in RECORDS for op, fn in k.onnx.ops.items()])

# Each graph node of these ops (TorchScript, torch.export) makes exactly one such runtime
# call, so graph formats name their sites by aligning candidate nodes with calls in order.
# Fused ops that hold an activation (fused.py) are candidates too.
ATEN_ACTIVATION_OPS = frozenset(_ATEN)
ONNX_CANDIDATE_OPS = frozenset(_ONNX)


def _first(classifiers: tuple[Any, ...], include_smooth: bool, *call: Any) -> Activation | None:
    for classify in classifiers:
        found = classify(*call)
        if found is not None:
            return found if include_smooth or not KINDS[found.kind].smooth else None
    return None


def classify_aten(aten_name: str, args: tuple, kwargs: Mapping[str, Any],
                  include_smooth: bool = False) -> Activation | None:
    """Classify one aten call (`aten_name` is the overload packet, e.g. "clamp_")."""
    classifiers = _ATEN.get(aten_name)
    return _first(classifiers, include_smooth, args, kwargs) if classifiers else None


def classify_onnx(op_type: str, attrs: Mapping[str, Any], inputs: Sequence[Any],
                  include_smooth: bool = False) -> Activation | None:
    """Classify one ONNX node of the default domain on its own (`inputs`: see classifiers.ABSENT)."""
    classifiers = _ONNX.get(op_type)
    return _first(classifiers, include_smooth, attrs, inputs) if classifiers else None


def upper_bound(kind: str, params: Mapping[str, float]) -> float | None:
    """The upper bound a site of `kind` saturates at: the kind's own (relu6: 6) or params["max"]."""
    fixed = KINDS[kind].upper
    return fixed if fixed is not None else params.get("max")


def torch_op_label(aten_name: str) -> str:
    """How a report names an aten op a site calls ("aten.clamp")."""
    return f"aten.{aten_name}"


def torch_functions() -> dict[Any, str]:
    """Python function -> kind, for the functions every call of which is a kind (torch.relu,
    F.relu6, ...): what a torch.fx graph of a module calls. Imports torch."""
    return {_resolve(path): k.name for k in RECORDS for path in k.torch.functions}


TENSOR_METHODS: dict[str, str] = {m: k.name for k in RECORDS for m in k.torch.methods}


def _resolve(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def torch_writer(kind: str) -> Any:
    """The torch function that a patched model calls to compute `kind` (torch.prelu, ...)."""
    path = KINDS[kind].torch.writer
    if path is None:
        raise KeyError(f"kind {kind} has no torch writer")
    return _resolve(path)


def onnx_writer(kind: str) -> str:
    """The ONNX op type that a patched model writes for `kind` (PRelu, ...)."""
    op = KINDS[kind].onnx.writer
    if op is None:
        raise KeyError(f"kind {kind} has no ONNX writer")
    return op
