"""Backends run a model on the sample and return per-site counters; they never format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..stats import SiteCounters


@dataclass
class CapturedSite:
    """What a backend reports for one site, in execution order."""

    name: str
    kind: str
    op: str
    params: dict[str, float]
    shape: list[int]  # per-sample output shape
    axis: int  # neuron axis in the batched output
    counters: SiteCounters


@dataclass
class CaptureResult:
    sites: list[CapturedSite]
    warnings: list[str] = field(default_factory=list)
    # activations that ran (or exist) but could not be measured (a Loop body, a fused kernel
    # on quantized values): each has its warning; a scan never says "no ReLU" when this is set
    unmeasured: list[str] = field(default_factory=list)
    nonfinite_inputs: int = 0  # NaN / inf values in the inputs the sites were measured on


class Backend(Protocol):
    """What scan and patch need from a backend module (backends.torch, backends.onnx);
    formats.backend_of(format) picks the module."""

    def resolve_device(self, device: str) -> Any: ...

    def prepare(self, obj: Any, device: Any) -> Any: ...  # has .specs, .fixed_batch, .restore()

    def auto_batch_size(self, model: Any, sample: Any) -> int: ...

    def capture(self, model: Any, sample: Any, batch_size: int, neuron_axis: str = "auto",
                include_smooth: bool = False, progress: Callable[[int], None] | None = None,
                neuron_extremes: bool = False, observer: Any = None) -> CaptureResult: ...


class CaptureObserver(Protocol):
    """What a capture tells an observer (patch verification: patching/verify_pass.py), so
    that the checks of a patched model ride on its rescan instead of passes of their own.

    Per batch: `start_batch()`, then (torch) `on_call` for every activation call in order,
    then `finish_batch` with the model's outputs (torch: what forward returned; ONNX: the
    graph outputs as numpy arrays, and the values of `onnx_fetch`'s names) and the
    seconds the forward pass took (torch: under the capture; ONNX: the instrumented run)."""

    def start_batch(self) -> None: ...

    def on_call(self, call: Any) -> None: ...

    def onnx_fetch(self, proto: Any) -> list[str]: ...  # extra tensors to return (ONNX)

    def finish_batch(self, outputs: Any, valid: int, rows: int, seconds: float,
                     fetched: dict[str, Any] | None = None) -> None: ...
