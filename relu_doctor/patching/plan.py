"""Which sites a patch rewrites, and how: the plan every format's rewriter follows.

A site is patched when its kind is grad-blocked (relu, relu6, clip), at least one of its
neurons is dead and its dead ratio reaches --min-dead-ratio, narrowed by --select /
--ignore. The plan is plain data (site index, name, axis, dead indices, slope), so the
torch and ONNX rewriters, the verifier and the summary all read the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..gates import selected, unmatched
from ..option_values import globs, number
from ..report import Report, Site

CHANNEL, LAYER, REVIVE = "channel", "layer", "revive"
MODES = (CHANNEL, LAYER, REVIVE)
DEFAULT_SLOPE = 0.01


@dataclass(frozen=True)
class SitePatch:
    """How one site leaks after the patch."""

    index: int  # position in execution order (the report's site index)
    name: str
    kind: str  # the original kind: relu, relu6 or clip
    op: str
    axis: int  # neuron axis in the batched output
    rank: int  # rank of the batched output
    neurons: int
    dead: tuple[int, ...]
    upper: float | None  # upper bound the patched site keeps (relu6: 6, clip: max)
    mode: str
    slope: float

    @property
    def leaky_neurons(self) -> int:
        """Neurons whose negative side now passes gradient."""
        return len(self.dead) if self.mode == CHANNEL else self.neurons

    def slopes(self) -> np.ndarray:
        """Per-neuron PReLU slopes (channel mode): `slope` on dead neurons, -0.0 on the others.

        Why -0.0 and not 0.0: PReLU computes slope * x for x <= 0, and -0.0 * x is +0.0 for a
        negative x, the very bits ReLU returns; 0.0 would give -0.0. Live neurons then match
        ReLU bit for bit on every finite non-zero input (an input of exactly +-0 gives a zero
        of the other sign, and -inf gives NaN: PReLU multiplies where ReLU clamps).
        """
        w = np.full(self.neurons, -0.0, dtype=np.float32)
        w[list(self.dead)] = self.slope
        return w

    def same_rewrite(self, other: SitePatch) -> bool:
        """Whether two sites that share one call in the code can take one rewrite."""
        return (self.mode, self.slope, self.upper, self.axis, self.neurons) == (
            other.mode, other.slope, other.upper, other.axis, other.neurons) and (
            self.mode == LAYER or self.dead == other.dead)


@dataclass(frozen=True)
class LeftAlone:
    """Dead neurons of a site that revive does not touch, and why."""

    name: str
    neurons: int
    reason: str


@dataclass
class PatchPlan:
    mode: str  # channel, layer or revive (whose sites leak as in channel mode)
    slope: float
    sites: list[SitePatch] = field(default_factory=list)
    site_names: list[str] = field(default_factory=list)  # every site of the model, in order
    left_alone: list[LeftAlone] = field(default_factory=list)  # revive: sites it cannot cut off
    zeroed: dict[str, list[str]] = field(default_factory=dict)  # revive: site -> weights whose inputs were zeroed

    def by_name(self) -> dict[str, SitePatch]:
        return {p.name: p for p in self.sites}

    @property
    def leaky_neurons(self) -> int:
        return sum(p.leaky_neurons for p in self.sites)


def check_options(slope: float, mode: str, min_dead_ratio: float) -> None:
    if mode not in MODES:
        raise UserError(f"--mode must be channel, layer or revive (got {mode!r})")
    if not (math.isfinite(number("slope", slope)) and 0 < slope <= 1):
        raise UserError(f"--slope must be in (0, 1] (got {slope:g})", "LeakyReLU's usual slope is 0.01.")
    if math.isnan(number("min_dead_ratio", min_dead_ratio)) or not 0 <= min_dead_ratio <= 1:
        raise UserError(f"--min-dead-ratio is a fraction between 0 and 1 (got {min_dead_ratio:g})")


def plan_patch(
    report: Report,
    *,
    slope: float = DEFAULT_SLOPE,
    mode: str = CHANNEL,
    min_dead_ratio: float = 0.0,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> PatchPlan:
    """The sites to rewrite: grad-blocked, with dead neurons, dead ratio >= min_dead_ratio."""
    check_options(slope, mode, min_dead_ratio)
    select, ignore = globs("select", select), globs("ignore", ignore)
    missing = unmatched(report.sites, select)
    if select and len(missing) == len(select):
        raise UserError(f"--select {' '.join(select)} matches none of the {len(report.sites)} sites",
                        "Check the globs against the site names of a scan.")
    plan = PatchPlan(mode, slope, site_names=[s.name for s in report.sites])
    for site in selected(report.sites, select, ignore):
        if site.grad_blocked and site.dead > 0 and site.dead_ratio >= min_dead_ratio:
            plan.sites.append(_site_patch(site, mode, slope))
    return plan


def _site_patch(site: Site, mode: str, slope: float) -> SitePatch:
    mode = CHANNEL if mode == REVIVE else mode  # revive leaks the dead neurons as channel mode does
    return SitePatch(
        index=site.index, name=site.name, kind=site.kind, op=site.op, axis=site.axis,
        rank=len(site.shape) + 1, neurons=site.neurons, dead=tuple(int(i) for i in site.dead_indices),
        upper=site.upper_bound, mode=mode, slope=float(slope),
    )
