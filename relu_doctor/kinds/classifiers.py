"""Classifier builders the records use: they read an op's arguments (torch) or attributes
and constant inputs (ONNX) and say whether this call is the record's kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import Activation, AtenClassifier, OnnxClassifier

# ---- bounds shared by both frameworks -------------------------------------------------


def is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def bounded_kind(lower: Any, upper: Any) -> Activation | None:
    """clamp / hardtanh / Clip with these bounds: relu, relu6 or clip when the lower bound is 0."""
    if not is_zero(lower):
        return None
    if upper is None:
        return Activation("relu", {})
    if not isinstance(upper, (int, float)) or upper <= 0:
        return None
    if upper == 6:
        return Activation("relu6", {})
    return Activation("clip", {"max": float(upper)})


def only(kind: str, classify: Any) -> Any:
    """`classify`, keeping only the answers of `kind` (a record lists the calls that are its kind)."""

    def classifier(*a: Any) -> Activation | None:
        found = classify(*a)
        return found if found is not None and found.kind == kind else None

    return classifier


def always(kind: str) -> Any:
    """Every call of the op is this kind, with no parameters."""
    return lambda *a: Activation(kind, {})


# ---- torch (aten) -------------------------------------------------------------------------


def arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def aten_clamp(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    return bounded_kind(arg(a, k, 1, "min", None), arg(a, k, 2, "max", None))


def aten_clamp_min(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    return bounded_kind(arg(a, k, 1, "min", None), None)


def aten_hardtanh(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    return bounded_kind(arg(a, k, 1, "min_val", -1.0), arg(a, k, 2, "max_val", 1.0))


def aten_threshold(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    # threshold(x, t, v) = x if x > t else v: a ReLU exactly when t == v == 0
    ok = is_zero(arg(a, k, 1, "threshold", None)) and is_zero(arg(a, k, 2, "value", None))
    return Activation("relu", {}) if ok else None


def aten_leaky(a: tuple, k: Mapping[str, Any]) -> Activation:
    return Activation("leaky_relu", {"negative_slope": float(arg(a, k, 1, "negative_slope", 0.01))})


def aten_rrelu(a: tuple, k: Mapping[str, Any]) -> Activation:
    # rrelu(self, lower, upper, ...) or, decomposed, rrelu_with_noise(self, noise, lower, upper, ...)
    first = 2 if len(a) > 1 and hasattr(a[1], "shape") else 1
    return Activation(
        "rrelu",
        {"lower": float(arg(a, k, first, "lower", 1 / 8)), "upper": float(arg(a, k, first + 1, "upper", 1 / 3))},
    )


def with_inplace(table: Mapping[str, AtenClassifier]) -> dict[str, AtenClassifier]:
    """Each aten op with its in-place twin (relu and relu_), classified alike."""
    out = dict(table)
    out.update({f"{name}_": fn for name, fn in table.items()})
    return out


# ---- ONNX ----------------------------------------------------------------------------------
# A node's inputs as the ONNX backend hands them to a classifier: the constant value
# (a float, or a numpy array), None when the input is computed at run time, or ABSENT
# when an optional input is left out (empty name) or not given at all.
ABSENT = object()
# Clip's attribute defaults before opset 11 (and what exporters write for "no bound").
FLOAT32_MAX = 3.4028234663852886e38


def onnx_scalar(value: Any) -> Any:
    """A constant input as a Python float when it holds one number; else as given."""
    if value is None or value is ABSENT:
        return value
    size = getattr(value, "size", None)
    if size == 1:
        return float(value.reshape(-1)[0])
    return value if size is not None else float(value)


def _onnx_bound(value: Any) -> Any:
    """Clip bound: ABSENT / +-FLT_MAX / inf mean "no bound" (None); a non-constant stays unknown."""
    value = onnx_scalar(value)
    if value is ABSENT or (isinstance(value, float) and abs(value) >= FLOAT32_MAX):
        return None
    return value


def _onnx_input(inputs: Sequence[Any], index: int) -> Any:
    return inputs[index] if len(inputs) > index else ABSENT


def float32_repr(value: float) -> float:
    """0.1 stored as a float32 attribute reads 0.10000000149...; report it as written (0.1):
    7 significant digits is what a float32 holds."""
    return float(f"{float(value):.7g}")


def onnx_clip(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation | None:
    if "min" in attrs or "max" in attrs:  # opset < 11: bounds are attributes
        lower, upper = attrs.get("min", -FLOAT32_MAX), attrs.get("max", FLOAT32_MAX)
    else:  # opset >= 11: optional inputs
        lower, upper = _onnx_input(inputs, 1), _onnx_input(inputs, 2)
    lower, upper = _onnx_bound(lower), _onnx_bound(upper)
    if upper is not None and not isinstance(upper, float):
        return None  # a computed or tensor upper bound: cannot tell relu6 from clip
    return bounded_kind(lower, upper)


def onnx_leaky(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation:
    return Activation("leaky_relu", {"negative_slope": float32_repr(attrs.get("alpha", 0.01))})


def onnx_thresholded(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation | None:
    # ThresholdedRelu(x) = x if x > alpha else 0: a ReLU exactly when alpha == 0
    return Activation("relu", {}) if attrs.get("alpha", 1.0) == 0 else None


__all__ = ["ABSENT", "AtenClassifier", "OnnxClassifier"]
