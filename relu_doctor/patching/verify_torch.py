"""Check a reloaded patched torch model: on the sample during its rescan (RescanChecks,
see verify_pass.py), on fresh random inputs under a checking mode of its own.

The patched model runs under a dispatch mode (backends/torch_calls.py), which sees every
activation call, in order;
the k-th one of a forward pass is the k-th site of the original's report (a rewrite
replaces each call by exactly one leaky call), so the plan says what it must compute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..backends.torch_calls import ActivationCall, ActivationCalls
from ..data_sources import tensor_to_numpy as _host
from ..inputs import Sample
from .plan import CHANNEL, PatchPlan
from .verify import SiteCheck, Verification
from .verify_pass import OutputRecorder, RescanObserver, torch_outputs


def check_call(checks: dict[int, SiteCheck], index: int, call: ActivationCall) -> None:
    """The `index`-th activation call of a forward pass of the patched model, checked
    against the plan when it is a patched site."""
    check = checks.get(index)
    if check is None:
        return
    want = "prelu" if check.patch.mode == CHANNEL else "leaky_relu"
    x = call.input
    if call.activation.kind != want or x is None:
        check.notes.append(f"the model calls {call.op} ({call.activation.kind}) there, not a {want}")
        return
    # prelu's slopes run along dim 1 of its input (the rewrite moved the neuron axis there)
    axis = min(1, x.dim() - 1) if check.patch.mode == CHANNEL else check.patch.axis
    check.add(_host(x), _host(call.output), axis, rtol=1e-2 if x.dtype == torch.bfloat16 else None)


def _miscount(result: Verification, sites: int, passes: int) -> None:
    if passes:
        result.problems.append(f"the patched model made a different number of activation calls than the "
                               f"original's {sites} sites ({passes} forward passes)")


class _Probe(ActivationCalls):
    """The checks on inputs the rescan does not see (the fresh random batch)."""

    def __init__(self, checks: dict[int, SiteCheck], sites: int, include_smooth: bool) -> None:
        super().__init__(include_smooth)
        self.checks, self.sites = checks, sites
        self.calls = 0
        self.miscounts = 0

    def forward(self, run: Callable[[], Any]) -> None:
        self.calls = 0
        self.start_pass()
        with self:
            run()
        self.finish_pass()
        if self.calls != self.sites:
            self.miscounts += 1

    def on_call(self, call: ActivationCall) -> None:
        check_call(self.checks, self.calls, call)
        self.calls += 1


class RescanChecks(RescanObserver):
    """Observer of the rescan of the written model (a backends.CaptureObserver): the capture
    sees every activation call in order, the k-th one of a pass is site k of the plan."""

    def __init__(self, checks: dict[int, SiteCheck], plan: PatchPlan, result: Verification,
                 recorded: OutputRecorder | None) -> None:
        super().__init__(result, recorded)
        self.checks, self.sites = checks, len(plan.site_names)
        self.calls = 0
        self.miscounts = 0

    def start_batch(self) -> None:
        super().start_batch()
        self.calls = 0

    def onnx_fetch(self, proto: Any) -> list[str]:
        return []

    def on_call(self, call: ActivationCall) -> None:
        with self.checking():
            check_call(self.checks, self.calls, call)
        self.calls += 1

    def finish_batch(self, outputs: Any, valid: int, rows: int, seconds: float,
                     fetched: dict[str, Any] | None = None) -> None:
        if self.calls != self.sites:
            self.miscounts += 1
        super().finish_batch(outputs, valid, rows, seconds, fetched)

    def finish(self) -> None:
        _miscount(self.result, self.sites, self.miscounts)
        self.timings()


def check_fresh(patched: Any, checks: dict[int, SiteCheck], plan: PatchPlan, fresh: Sample, batch_size: int,
                result: Verification, device: str = "cpu", include_smooth: bool = False) -> None:
    """Run the fresh random inputs through the patched model under the checks."""
    from ..backends.torch import prepare, resolve_device

    after = prepare(patched, resolve_device(device))
    probe = _Probe(checks, len(plan.site_names), include_smooth)
    try:
        with torch.inference_mode():
            for batch in fresh.batches(batch_size, after.fixed_batch):
                probe.forward(functools.partial(after.forward, *_inputs(batch.arrays, after)))
                result.fresh += batch.valid
    finally:
        after.restore()
    _miscount(result, len(plan.site_names), probe.miscounts)


def batch_outputs(model: Any, sample: Sample, batch_size: int, device: str = "cpu") -> Iterator[list[np.ndarray]]:
    """The model's outputs on the sample, batch by batch, sample rows only (for a comparison
    when the original's outputs were too large to keep from its scan)."""
    from ..backends.torch import prepare, resolve_device

    prepared = prepare(model, resolve_device(device))
    try:
        with torch.inference_mode():
            for batch in sample.batches(batch_size, prepared.fixed_batch):
                yield torch_outputs(prepared.forward(*_inputs(batch.arrays, prepared)), batch.valid)
    finally:
        prepared.restore()


def _inputs(arrays: list[np.ndarray], model: Any) -> list[torch.Tensor]:
    # A copy per forward pass: an in-place activation may write its input.
    out = []
    for a in arrays:
        t = torch.tensor(a)
        if t.is_floating_point():
            t = t.to(model.dtype)
        out.append(t.to(model.device))
    return out
