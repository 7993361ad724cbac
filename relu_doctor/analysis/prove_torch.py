"""Data-free proofs for torch models (module, TorchScript, .pt2): run torch_bounds twice.

Once with every input unbounded (the structural proofs: a neuron whose input is a
constant <= 0 whatever the input), once in the declared input range (the interval
proofs). Both runs name sites exactly as the scan does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .proof import TOP, ProofResult, add_saturated, neuron_lower, neuron_upper, site_proof, unit_roundoff
from .torch_bounds import IntervalMode, SiteBounds


def prove_torch(obj: Any, inputs: list[dict[str, Any]], sites: list[Any], input_range: tuple[float, float] | None,
                include_smooth: bool = False) -> ProofResult:
    """Proofs per site for a torch model object; `inputs` and `sites` come from the scan's report."""
    from ..backends.torch import prepare

    model = prepare(obj, torch.device("cpu"))
    try:
        u = unit_roundoff(str(model.dtype))
        unbounded = float(torch.finfo(model.dtype).max)
        structural, lost = _run(model, inputs, (-unbounded, unbounded), include_smooth, u)
        ranged: dict[str, SiteBounds] = {}
        if input_range is not None:
            ranged, lost = _run(model, inputs, input_range, include_smooth, u)
    finally:
        model.restore()
    result = ProofResult({}, input_range, "torch")
    for site in sites:
        s, r = structural.get(site.name), ranged.get(site.name)
        if s is None:
            result.warnings.append(f"site {site.name}: not reached by the interval run, nothing proven")
            continue
        s_hi = _upper(s, site)
        r_hi = _upper(r, site) if r is not None else None
        proof = site_proof(s_hi, r_hi, _rules(s, site))
        result.sites[site.name] = add_saturated(proof, [_lower(s, site), _lower(r, site)], site.upper_bound)
    if lost:
        ops = ", ".join(f"aten.{op}" for op in sorted(lost))
        result.warnings.append(f"no interval rule for {ops}: bounds after them are unbounded (sound, less precise)")
    return result


def _run(model: Any, inputs: list[dict[str, Any]], bounds: tuple[float, float], include_smooth: bool,
         u: float) -> tuple[dict[str, SiteBounds], dict[str, int]]:
    batch = model.fixed_batch or 1
    limit = float(torch.finfo(model.dtype).max)
    lo, hi = max(bounds[0], -limit), min(bounds[1], limit)
    middle = 0.0 if lo <= 0 <= hi else (lo + hi) / 2
    origins = model.make_origins()
    mode = IntervalMode(origins, include_smooth, u)
    tensors = []
    for spec in inputs:
        dtype = getattr(torch, spec.get("dtype", "float32"), torch.float32)
        if dtype.is_floating_point:
            dtype = model.dtype
        tensors.append(torch.full((batch, *spec["shape"]), middle, dtype=dtype) if dtype.is_floating_point
                       else torch.zeros((batch, *spec["shape"]), dtype=dtype))
    for t in tensors:
        if t.is_floating_point():
            mode.seed(t, lo, hi)
        else:  # token ids and other integer inputs: any value
            mode.boxes[t] = TOP
    try:
        with torch.inference_mode(), mode:
            model.forward(*tensors)
            mode.flush()
    finally:
        origins.close()
    return {s.name: s for s in mode.sites}, mode.lost


def _upper(bounds: SiteBounds, site: Any) -> np.ndarray | None:
    if bounds.out is None:
        return None
    return neuron_upper(bounds.out.hi.numpy(), list(site.shape), site.axis)


def _lower(bounds: SiteBounds | None, site: Any) -> np.ndarray | None:
    if bounds is None or bounds.out is None:
        return None
    return neuron_lower(bounds.out.lo.numpy(), list(site.shape), site.axis)


def _rules(bounds: SiteBounds, site: Any) -> np.ndarray | None:
    """Per neuron, the structural rule that makes its input constant (empty string: none)."""
    if bounds.why is None:
        return None
    axis, mask, rule = bounds.why
    n = site.neurons
    if axis != site.axis or mask.numel() != n:
        return None
    return np.where(mask.numpy(), rule, "")
