"""THE registry of activation kinds and of the ops that apply them.

Everything that needs to know what "a ReLU" is asks here: the torch backend classifies
aten calls with `classify_aten`, graph formats list candidate nodes with
`GRAPH_CANDIDATE_OPS`, the ONNX backend uses the ONNX table, patching asks how a kind
leaks. Adding an activation means adding it here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str
    grad_blocked: bool  # the negative side has zero gradient: only these "die"
    nonnegative: bool  # outputs are never negative (lets reductions skip abs())
    smooth: bool = False  # only reported with --include-smooth
    bounded: bool = False  # has an upper bound a neuron can saturate at (counters keep a minimum)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("relu", grad_blocked=True, nonnegative=True),
        Kind("relu6", grad_blocked=True, nonnegative=True, bounded=True),
        Kind("clip", grad_blocked=True, nonnegative=True, bounded=True),
        Kind("leaky_relu", grad_blocked=False, nonnegative=False),
        Kind("prelu", grad_blocked=False, nonnegative=False),
        Kind("rrelu", grad_blocked=False, nonnegative=False),
        *(
            Kind(name, grad_blocked=False, nonnegative=False, smooth=True)
            for name in ("elu", "selu", "celu", "gelu", "silu", "hardswish", "mish", "softplus")
        ),
    ]
}

# Activation modules whose forward is the activation itself: a call of one is a
# "module site" named by the module's path; any other call is functional.
ACTIVATION_MODULES = frozenset(
    {"ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "Hardtanh", "Threshold",
     "ELU", "SELU", "CELU", "GELU", "SiLU", "Hardswish", "Mish", "Softplus"}
)


@dataclass(frozen=True)
class Activation:
    """One classified call: its kind and the parameters that define it."""

    kind: str
    params: Mapping[str, float]

    @property
    def upper_bound(self) -> float | None:
        return {"relu6": 6.0}.get(self.kind, self.params.get("max"))


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _bounded(lower: Any, upper: Any) -> Activation | None:
    """clamp/hardtanh with these bounds: relu, relu6 or clip when the lower bound is 0."""
    if not _is_zero(lower):
        return None
    if upper is None:
        return Activation("relu", {})
    if not isinstance(upper, (int, float)) or upper <= 0:
        return None
    if upper == 6:
        return Activation("relu6", {})
    return Activation("clip", {"max": float(upper)})


def _arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _clamp(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    return _bounded(_arg(a, k, 1, "min", None), _arg(a, k, 2, "max", None))


def _hardtanh(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    return _bounded(_arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0))


def _threshold(a: tuple, k: Mapping[str, Any]) -> Activation | None:
    # threshold(x, t, v) = x if x > t else v: a ReLU exactly when t == v == 0
    ok = _is_zero(_arg(a, k, 1, "threshold", None)) and _is_zero(_arg(a, k, 2, "value", None))
    return Activation("relu", {}) if ok else None


def _leaky(a: tuple, k: Mapping[str, Any]) -> Activation:
    return Activation("leaky_relu", {"negative_slope": float(_arg(a, k, 1, "negative_slope", 0.01))})


def _rrelu(a: tuple, k: Mapping[str, Any]) -> Activation:
    # rrelu(self, lower, upper, ...) or, decomposed, rrelu_with_noise(self, noise, lower, upper, ...)
    first = 2 if len(a) > 1 and hasattr(a[1], "shape") else 1
    return Activation(
        "rrelu",
        {"lower": float(_arg(a, k, first, "lower", 1 / 8)), "upper": float(_arg(a, k, first + 1, "upper", 1 / 3))},
    )


def _plain(kind: str):  # noqa: ANN202 - a tiny classifier factory
    return lambda a, k: Activation(kind, {})


# aten overload packet name -> classifier of its arguments (None: not an activation site).
# A TorchDispatchMode sees composite ops either whole (relu6, prelu, rrelu, clip under
# inference_mode) or decomposed (hardtanh, _prelu_kernel, rrelu_with_noise, clamp), so
# both spellings are here.
_ATEN_CLASSIFIERS = {
    "relu": _plain("relu"), "relu_": _plain("relu"),
    "clamp": _clamp, "clamp_": _clamp, "clip": _clamp, "clip_": _clamp,
    "clamp_min": lambda a, k: _bounded(_arg(a, k, 1, "min", None), None),
    "hardtanh": _hardtanh, "hardtanh_": _hardtanh,
    "relu6": _plain("relu6"), "relu6_": _plain("relu6"),
    "threshold": _threshold, "threshold_": _threshold,
    "leaky_relu": _leaky, "leaky_relu_": _leaky,
    "prelu": _plain("prelu"), "_prelu_kernel": _plain("prelu"),
    "rrelu": _rrelu, "rrelu_": _rrelu, "rrelu_with_noise": _rrelu, "rrelu_with_noise_": _rrelu,
}
_ATEN_CLASSIFIERS["clamp_min_"] = _ATEN_CLASSIFIERS["clamp_min"]
_SMOOTH_ATEN = {
    "elu": "elu", "elu_": "elu", "selu": "selu", "selu_": "selu", "celu": "celu", "celu_": "celu",
    "gelu": "gelu", "gelu_": "gelu", "silu": "silu", "silu_": "silu", "hardswish": "hardswish",
    "hardswish_": "hardswish", "mish": "mish", "mish_": "mish", "softplus": "softplus",
}

# Each graph node of these ops (TorchScript, torch.export) makes exactly one such runtime
# call, so graph formats name their sites by aligning candidate nodes with calls in order.
GRAPH_CANDIDATE_OPS = frozenset(_ATEN_CLASSIFIERS) | frozenset(_SMOOTH_ATEN)


def is_runtime_candidate(aten_name: str) -> bool:
    """Whether a runtime aten op is one that a graph format lists as a candidate node."""
    return aten_name in GRAPH_CANDIDATE_OPS


def classify_aten(
    aten_name: str, args: tuple, kwargs: Mapping[str, Any], include_smooth: bool = False
) -> Activation | None:
    """Classify one aten call (`aten_name` is the overload packet, e.g. "clamp_")."""
    classifier = _ATEN_CLASSIFIERS.get(aten_name)
    if classifier is not None:
        return classifier(args, kwargs)
    if include_smooth and aten_name in _SMOOTH_ATEN:
        kind = _SMOOTH_ATEN[aten_name]
        return Activation(kind, {})
    return None


# ---- ONNX ------------------------------------------------------------------------------
# A node's inputs as the ONNX backend hands them to a classifier: the constant value
# (a float, or a numpy array), None when the input is computed at run time, or ABSENT
# when an optional input is left out (empty name) or not given at all.
ABSENT = object()
# Clip's attribute defaults before opset 11 (and what exporters write for "no bound").
_FLOAT32_MAX = 3.4028234663852886e38


def _onnx_scalar(value: Any) -> Any:
    """A constant input as a Python float when it holds one number; else as given."""
    if value is None or value is ABSENT:
        return value
    size = getattr(value, "size", None)
    if size == 1:
        return float(value.reshape(-1)[0])
    return value if size is not None else float(value)


def _onnx_bound(value: Any) -> Any:
    """Clip bound: ABSENT / +-FLT_MAX / inf mean "no bound" (None); a non-constant stays unknown."""
    value = _onnx_scalar(value)
    if value is ABSENT or (isinstance(value, float) and abs(value) >= _FLOAT32_MAX):
        return None
    return value


def _onnx_input(inputs: Sequence[Any], index: int) -> Any:
    return inputs[index] if len(inputs) > index else ABSENT


def _float32_repr(value: float) -> float:
    """0.1 stored as a float32 attribute reads 0.10000000149...; report it as written (0.1):
    7 significant digits is what a float32 holds."""
    return float(f"{float(value):.7g}")


def _onnx_clip(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation | None:
    if "min" in attrs or "max" in attrs:  # opset < 11: bounds are attributes
        lower, upper = attrs.get("min", -_FLOAT32_MAX), attrs.get("max", _FLOAT32_MAX)
    else:  # opset >= 11: optional inputs
        lower, upper = _onnx_input(inputs, 1), _onnx_input(inputs, 2)
    lower, upper = _onnx_bound(lower), _onnx_bound(upper)
    if upper is not None and not isinstance(upper, float):
        return None  # a computed or tensor upper bound: cannot tell relu6 from clip
    return _bounded(lower, upper)


def _onnx_max(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation | None:
    """Max(x, 0) in either order: exactly one computed input and one single zero."""
    if len(inputs) != 2:
        return None
    consts = [_onnx_scalar(v) for v in inputs if v is not None]
    if len(consts) == 1 and _is_zero(consts[0]):
        return Activation("relu", {})
    return None


def _onnx_leaky(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation:
    return Activation("leaky_relu", {"negative_slope": _float32_repr(attrs.get("alpha", 0.01))})


def _onnx_thresholded(attrs: Mapping[str, Any], inputs: Sequence[Any]) -> Activation | None:
    # ThresholdedRelu(x) = x if x > alpha else 0: a ReLU exactly when alpha == 0
    return Activation("relu", {}) if attrs.get("alpha", 1.0) == 0 else None


# ONNX op type (default domain) -> classifier of (attributes, constant inputs).
_ONNX_CLASSIFIERS = {
    "Relu": lambda attrs, inputs: Activation("relu", {}),
    "LeakyRelu": _onnx_leaky,
    "PRelu": lambda attrs, inputs: Activation("prelu", {}),
    "Clip": _onnx_clip,
    "Max": _onnx_max,
    "ThresholdedRelu": _onnx_thresholded,
}
_SMOOTH_ONNX = {
    "Elu": "elu", "Selu": "selu", "Celu": "celu", "Gelu": "gelu", "HardSwish": "hardswish",
    "Mish": "mish", "Softplus": "softplus",
}
# Ops that exporters combine into smooth activations: x * Sigmoid(x) is silu,
# x * HardSigmoid(x) and x * Clip(x + 3, 0, 6) / 6 are hardswish (a Clip(0, 6) inside one
# is that activation, not a relu6 site). The ONNX backend matches these shapes.
ONNX_SIGMOID_OPS = {"Sigmoid": "silu", "HardSigmoid": "hardswish"}
ONNX_HARD_SIGMOID_SHIFT, ONNX_HARD_SIGMOID_SCALE = 3.0, 6.0
ONNX_CANDIDATE_OPS = frozenset(_ONNX_CLASSIFIERS) | frozenset(_SMOOTH_ONNX)


def classify_onnx(
    op_type: str, attrs: Mapping[str, Any], inputs: Sequence[Any], include_smooth: bool = False
) -> Activation | None:
    """Classify one ONNX node of the default domain (`inputs`: see ABSENT above)."""
    classifier = _ONNX_CLASSIFIERS.get(op_type)
    if classifier is not None:
        return classifier(attrs, inputs)
    if include_smooth and op_type in _SMOOTH_ONNX:
        return Activation(_SMOOTH_ONNX[op_type], {})
    return None
