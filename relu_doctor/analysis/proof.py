"""What a data-free proof says about a site, shared by the torch and ONNX provers (numpy only).

Rules (SPEC 14), per proven neuron:
- `bn_constant`: a batch norm with scale 0 on that channel makes the activation's input
  the constant shift, and the shift is <= 0;
- `zero_weights`: the producing Conv / Linear has an all-zero weight row for it and a
  bias <= 0;
- `interval`: interval bound propagation gives an upper bound <= 0 for every position
  (from the declared --input-range, or with inputs unbounded).

Soundness: bounds are computed in float64 and widened after every rounding step by the
worst-case error of the model's own arithmetic in its dtype (n * u per n-term sum), so a
bound holds for the model as it runs, not only in exact arithmetic. Assumed: no
intermediate value overflows to inf, and convolutions round like sums (no Winograd/FFT
beyond the n * u bound; the margin is doubled for that reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BN_CONSTANT, ZERO_WEIGHTS, INTERVAL = "bn_constant", "zero_weights", "interval"
RULES = (BN_CONSTANT, ZERO_WEIGHTS, INTERVAL)


class _Top:
    """Unbounded: the box of a tensor made by an op without a rule, or by a random one (the
    interval analyses of torch and ONNX graphs share it)."""

    def __repr__(self) -> str:
        return "TOP"


TOP: Any = _Top()

BIG = 1e300  # bounds are clamped to +-BIG: finite, so that an exact zero weight times it is 0
_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}


def unit_roundoff(dtype_name: str) -> float:
    """u of the model's compute dtype, plus float64's own rounding in the bound arithmetic."""
    return _ROUNDOFF.get(dtype_name.removeprefix("torch."), 2.0**-24) + 2.0**-52


def sum_margin(terms: int, u: float) -> float:
    """Relative error bound of an n-term float sum (gamma_n, doubled: summation orders vary)."""
    n = max(int(terms), 1) + 2
    return 2.0 * n * u / max(1.0 - n * u, 0.5)


@dataclass
class SiteProof:
    """Neurons of one site that cannot fire on any input the proof covers."""

    indices: list[int] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # one per index
    # relu6 / clip: neurons stuck at the upper bound on every input (no gradient either)
    saturated: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.indices)


@dataclass
class ProofResult:
    sites: dict[str, SiteProof]  # by site name; a site missing here was not reached
    input_range: tuple[float, float] | None
    graph: str  # what was analysed: "torch" (aten calls) or "onnx"
    warnings: list[str] = field(default_factory=list)


def neuron_upper(hi: np.ndarray, shape: list[int], axis: int) -> np.ndarray | None:
    """Per-neuron max of `hi` (a batch of inputs) viewed as the scan's (B, *shape) with neuron `axis`."""
    per_sample = int(np.prod(shape, dtype=np.int64))
    if per_sample == 0 or hi.size % per_sample:
        return None
    full = hi.reshape(-1, *shape)
    if axis >= full.ndim:
        return None
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    return moved.max(axis=1) if moved.shape[1] else np.full(moved.shape[0], -np.inf)


def neuron_lower(lo: np.ndarray, shape: list[int], axis: int) -> np.ndarray | None:
    """Per-neuron min of `lo`, as neuron_upper reads `hi`."""
    upper = neuron_upper(-lo, shape, axis)
    return None if upper is None else -upper


def add_saturated(proof: SiteProof, lows: list[np.ndarray | None], upper: float | None) -> SiteProof:
    """Neurons whose output is >= `upper` (relu6: 6) everywhere, by any of the runs' lower bounds."""
    if upper is None:
        return proof
    stuck: set[int] = set()
    for lo in lows:
        if lo is not None:
            stuck |= {int(i) for i in np.flatnonzero(lo >= upper)}
    proof.saturated = sorted(stuck)
    return proof


def site_proof(structural_hi: np.ndarray | None, ranged_hi: np.ndarray | None,
               structural_rules: np.ndarray | None) -> SiteProof:
    """Combine per-neuron upper bounds: with unbounded inputs (structural) and in the range."""
    proof = SiteProof()
    n = len(structural_hi) if structural_hi is not None else len(ranged_hi) if ranged_hi is not None else 0
    for i in range(n):
        if structural_hi is not None and structural_hi[i] <= 0:
            rule = str(structural_rules[i]) if structural_rules is not None and structural_rules[i] else INTERVAL
            proof.indices.append(i)
            proof.rules.append(rule)
        elif ranged_hi is not None and ranged_hi[i] <= 0:
            proof.indices.append(i)
            proof.rules.append(INTERVAL)
    return proof
