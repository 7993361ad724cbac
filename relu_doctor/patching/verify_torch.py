"""Run the sample through an original and a reloaded patched torch model, and check them.

The patched model runs under the capture's dispatch mode (backends/torch_calls.py), which
sees every activation call, in order;
the k-th one of a forward pass is the k-th site of the original's report (a rewrite
replaces each call by exactly one leaky call), so the plan says what it must compute.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from ..backends.torch_calls import ActivationCall, ActivationCalls
from ..inputs import Sample
from .plan import CHANNEL, PatchPlan
from .verify import PairTimer, SiteCheck, Verification, max_abs_change, new_checks


class _Probe(ActivationCalls):
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
        check = self.checks.get(self.calls)
        self.calls += 1
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


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()


def verify_torch(original: Any, patched: Any, plan: PatchPlan, sample: Sample, fresh: Sample,
                 batch_size: int, device: str = "cpu", include_smooth: bool = False) -> Verification:
    from ..backends.torch import prepare, resolve_device

    dev = resolve_device(device)
    before, after = prepare(original, dev), prepare(patched, dev)
    checks = new_checks(plan)
    result = Verification(list(checks.values()))
    probe = _Probe(checks, len(plan.site_names), include_smooth)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run(model: Any, arrays: list[np.ndarray]) -> Any:
        return model.forward(*_inputs(arrays, model))

    timer = PairTimer(sync)
    first: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
    try:
        with torch.inference_mode():
            for batch in sample.batches(batch_size, after.fixed_batch):
                rows = len(batch.arrays[0]) if batch.arrays else 0
                ta, tb = _inputs(batch.arrays, before), _inputs(batch.arrays, after)
                if first is None:  # reused by the timing's top-up (only the timing reads them)
                    first = (_inputs(batch.arrays, before), _inputs(batch.arrays, after))
                ya = timer.run(0, functools.partial(before.forward, *ta), rows)
                yb = timer.run(1, functools.partial(after.forward, *tb), rows)
                result.max_abs_change = max(result.max_abs_change,
                                            max_abs_change(_outputs(ya, batch.valid), _outputs(yb, batch.valid)))
                probe.forward(functools.partial(run, after, batch.arrays))
                result.samples += batch.valid
            for batch in fresh.batches(batch_size, after.fixed_batch):
                probe.forward(functools.partial(run, after, batch.arrays))
                result.fresh += batch.valid
            if first is not None:
                timer.top_up(functools.partial(before.forward, *first[0]), functools.partial(after.forward, *first[1]))
            result.seconds_original, result.seconds_patched = timer.seconds()
            result.timed_batch = timer.rows
    finally:
        before.restore()
        after.restore()
    if probe.miscounts:
        result.problems.append(f"the patched model made a different number of activation calls than the "
                               f"original's {len(plan.site_names)} sites ({probe.miscounts} forward passes)")
    return result


def _inputs(arrays: list[np.ndarray], model: Any) -> list[torch.Tensor]:
    # A copy per forward pass: an in-place activation may write its input.
    out = []
    for a in arrays:
        t = torch.tensor(a)
        if t.is_floating_point():
            t = t.to(model.dtype)
        out.append(t.to(model.device))
    return out


def _outputs(y: Any, valid: int) -> list[np.ndarray]:
    leaves = [t for t in tree_flatten(y)[0] if isinstance(t, torch.Tensor)]
    return [_host(t[:valid] if t.dim() else t) for t in leaves]
