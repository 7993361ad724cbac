"""THE registry of activation kinds and of the ops that apply them.

Everything that needs to know what "a ReLU" is asks here: the torch backend classifies
aten calls with `classify_aten`, graph formats list candidate nodes with
`GRAPH_CANDIDATE_OPS`, the ONNX backend uses the ONNX table, patching asks how a kind
leaks. Adding an activation means adding it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str
    grad_blocked: bool  # the negative side has zero gradient: only these "die"
    nonnegative: bool  # outputs are never negative (lets reductions skip abs())
    smooth: bool = False  # only reported with --include-smooth


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("relu", grad_blocked=True, nonnegative=True),
        Kind("relu6", grad_blocked=True, nonnegative=True),
        Kind("clip", grad_blocked=True, nonnegative=True),
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
