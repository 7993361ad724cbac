"""The shape of a kind record, and of one classified activation call.

A record says what a kind means (bounds, gradient, smoothness), how each framework
spells it, and how a patched site writes it. Spellings map an op name to a classifier
that reads the call's arguments and returns the activation it applies, or None when
this call of the op is not this kind (clamp(x, 0, 6) is relu6, clamp(x, 0) is relu).
Several records may list the same op; the registry asks each in record order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Activation:
    """One classified call: its kind and the parameters that define it."""

    kind: str
    params: Mapping[str, float]  # its upper bound: registry.upper_bound


# (args, kwargs) of an aten call -> the activation, or None
AtenClassifier = Callable[[tuple, Mapping[str, Any]], "Activation | None"]
# (attributes, constant inputs) of an ONNX node -> the activation, or None (inputs: see onnx_args.ABSENT)
OnnxClassifier = Callable[[Mapping[str, Any], Sequence[Any]], "Activation | None"]


@dataclass(frozen=True)
class TorchSpelling:
    """How torch writes a kind: modules whose forward is the activation, aten ops, a writer."""

    modules: tuple[str, ...] = ()  # nn class names: a call of one is a "module site"
    aten: Mapping[str, AtenClassifier] = field(default_factory=dict)  # overload packet -> classifier
    # Python functions ("torch.nn.functional.relu") and Tensor methods ("relu_") every call
    # of which is this kind (what a torch.fx graph of a module shows)
    functions: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    # "torch.prelu": the function a patched model calls to compute this kind (only for kinds
    # that patches write: the leaks and the upper clamp)
    writer: str | None = None


@dataclass(frozen=True)
class OnnxSpelling:
    """How ONNX writes a kind: single nodes of the default domain (patterns: onnx_patterns/)."""

    ops: Mapping[str, OnnxClassifier] = field(default_factory=dict)
    writer: str | None = None  # the op type a patched model writes for this kind


@dataclass(frozen=True)
class Kind:
    """One activation kind: the registry's record."""

    name: str
    grad_blocked: bool  # the negative side has zero gradient: only these "die", only these are patched
    nonnegative: bool  # outputs are never negative (lets reductions skip abs())
    smooth: bool = False  # only reported with --include-smooth
    bounded: bool = False  # has an upper bound a neuron can saturate at (counters keep a minimum)
    upper: float | None = None  # a fixed upper bound (relu6: 6); `clip` carries its own in params
    params: tuple[str, ...] = ()  # the parameters a site of this kind reports
    torch: TorchSpelling = field(default_factory=TorchSpelling)
    onnx: OnnxSpelling = field(default_factory=OnnxSpelling)

    @property
    def leaks_when_patched(self) -> bool:
        """Patching turns dead neurons of grad-blocked kinds into leaky ones (keeping `upper`)."""
        return self.grad_blocked
