"""Compare two reports of (versions of) a model: per-site change, sites matched by name.

Data only: `diff()` returns a `Diff`, renderers in render/diff.py turn it into text.
Changes of ratios are in percentage points (pp): 6.2% -> 18.8% is +12.5 pp.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserError
from .gates import selected, unmatched
from .option_values import number
from .report import Report, Site

SCHEMA = "relu-doctor/diff/v1"
# Float noise: 100 * (0.4 - 0.3) is 10.000000000000004, which must not exceed a 10 pp limit.
PP_TOLERANCE = 1e-9


@dataclass
class SiteChange:
    """One site present in both reports."""

    name: str
    kind: str
    grad_blocked: bool
    neurons: int  # in the new report
    neurons_base: int
    dead_base: int
    dead: int
    dead_ratio_base: float
    dead_ratio: float
    sparsity_base: float
    sparsity: float
    dormant_base: int
    dormant: int
    newly_dead: list[int]  # dead now, alive in the baseline (empty when the neuron count changed)
    revived: list[int]  # alive now, dead in the baseline
    kind_base: str | None = None  # set when the kind changed, e.g. relu -> leaky_relu after a patch

    @property
    def dead_pp(self) -> float:
        return 100.0 * (self.dead_ratio - self.dead_ratio_base)

    @property
    def sparsity_pp(self) -> float:
        return 100.0 * (self.sparsity - self.sparsity_base)

    @property
    def changed(self) -> bool:
        return (self.dead != self.dead_base or self.neurons != self.neurons_base or self.dormant != self.dormant_base
                or self.kind_base is not None or bool(self.newly_dead or self.revived))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dead_pp": _round(self.dead_pp), "sparsity_pp": _round(self.sparsity_pp),
                "dormant_change": self.dormant - self.dormant_base}


@dataclass
class SiteOnly:
    """A site present in one report only (added in the new one, or removed from it)."""

    name: str
    kind: str
    grad_blocked: bool
    neurons: int
    dead: int
    dead_ratio: float

    @classmethod
    def of(cls, s: Site) -> SiteOnly:
        return cls(s.name, s.kind, s.grad_blocked, s.neurons, s.dead, s.dead_ratio)


@dataclass
class IncreaseViolation:
    site: str
    increase_pp: float
    threshold_pp: float
    dead_ratio_base: float
    dead_ratio: float

    def describe(self) -> str:
        return (f"site {self.site}: dead ratio {self.dead_ratio_base:.1%} -> {self.dead_ratio:.1%} "
                f"(+{self.increase_pp:.1f} pp > {self.threshold_pp:g} pp, fail-increase)")


@dataclass
class Diff:
    base: dict[str, Any]  # model and sample of each report, for the reader
    new: dict[str, Any]
    sites: list[SiteChange]  # matched sites, in the new report's order
    added: list[SiteOnly]
    removed: list[SiteOnly]
    summary: dict[str, Any]
    fail_increase: float | None = None
    violations: list[IncreaseViolation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "base": self.base,
            "new": self.new,
            "summary": self.summary,
            "sites": [s.to_dict() for s in self.sites],
            "added": [asdict(s) for s in self.added],
            "removed": [asdict(s) for s in self.removed],
            "gate": {"fail_increase": self.fail_increase, "passed": self.passed,
                     "violations": [asdict(v) for v in self.violations]},
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"


def check_increase(pp: float | None) -> None:
    """--fail-increase is in percentage points: 0 (any growth fails) to 100."""
    if pp is not None and (math.isnan(number("fail_increase", pp)) or not 0.0 <= pp <= 100.0):
        raise UserError(f"--fail-increase is in percentage points, between 0 and 100 (got {pp:g})",
                        "For example --fail-increase 2 fails when a site's dead ratio grows by more than 2 points.")


def diff(base: Report, new: Report, fail_increase: float | None = None,
         select: Sequence[str] = (), ignore: Sequence[str] = ()) -> Diff:
    """Per-site changes from `base` to `new`; `fail_increase` (pp) gates the selected grad-blocked sites."""
    check_increase(fail_increase)
    base_sites, new_sites = _by_name(base, "baseline"), _by_name(new, "new report")
    matched = [_change(base_sites[s.name], s) for s in new.sites if s.name in base_sites]
    d = Diff(
        base=_describe(base), new=_describe(new), sites=matched,
        added=[SiteOnly.of(s) for s in new.sites if s.name not in base_sites],
        removed=[SiteOnly.of(s) for s in base.sites if s.name not in new_sites],
        summary=_summary(base, new, matched), fail_increase=fail_increase, warnings=_warnings(base, new),
    )
    if fail_increase is not None:
        if select and len(unmatched(new.sites, select)) == len(select):
            raise UserError(f"--select {' '.join(select)} matches none of the {len(new.sites)} sites, so "
                            "--fail-increase would count nothing", "Check the globs against the site names.")
        if base.sites and new.sites and not matched:
            raise UserError("no site of the new report has a namesake in the baseline, so --fail-increase "
                            "would compare nothing", "Diff reports of the same model in the same format.")
        counted = {s.name for s in selected(new.sites, select, ignore)}
        d.violations = [
            IncreaseViolation(c.name, _round(c.dead_pp), fail_increase, c.dead_ratio_base, c.dead_ratio)
            for c in matched
            if c.name in counted and c.grad_blocked and c.dead_pp > fail_increase + PP_TOLERANCE
        ]
    return d


def _by_name(report: Report, which: str) -> dict[str, Site]:
    sites: dict[str, Site] = {}
    for s in report.sites:
        if s.name in sites:
            raise UserError(f"the {which} has two sites named {s.name!r}", "Site names must be unique; rescan it.")
        sites[s.name] = s
    return sites


def _change(b: Site, n: Site) -> SiteChange:
    same_neurons = b.neurons == n.neurons
    base_dead, new_dead = set(b.dead_indices), set(n.dead_indices)
    return SiteChange(
        name=n.name, kind=n.kind, grad_blocked=n.grad_blocked, neurons=n.neurons, neurons_base=b.neurons,
        dead_base=b.dead, dead=n.dead, dead_ratio_base=b.dead_ratio, dead_ratio=n.dead_ratio,
        sparsity_base=b.sparsity, sparsity=n.sparsity, dormant_base=b.dormant, dormant=n.dormant,
        newly_dead=sorted(new_dead - base_dead) if same_neurons else [],
        revived=sorted(base_dead - new_dead) if same_neurons else [],
        kind_base=b.kind if b.kind != n.kind else None,
    )


def _describe(r: Report) -> dict[str, Any]:
    return {"model": r.model.to_dict(), "samples": r.sample.samples, "source": r.sample.source}


def _summary(base: Report, new: Report, matched: list[SiteChange]) -> dict[str, Any]:
    b, n = base.summary, new.summary
    return {
        "sites_matched": len(matched), "sites_changed": sum(c.changed for c in matched),
        "dead_base": b.dead, "dead": n.dead, "dead_ratio_base": b.dead_ratio, "dead_ratio": n.dead_ratio,
        "dead_pp": _round(100.0 * (n.dead_ratio - b.dead_ratio)),
        "sparsity_base": b.sparsity, "sparsity": n.sparsity, "dormant_base": b.dormant, "dormant": n.dormant,
    }


def _warnings(base: Report, new: Report) -> list[str]:
    """What makes the two reports less comparable than they look."""
    out = []
    bs, ns = base.sample, new.sample
    if (bs.source, bs.samples, bs.seed) != (ns.source, ns.samples, ns.seed):
        out.append(f"the reports were scanned on different samples ({bs.samples} from {bs.source} vs "
                   f"{ns.samples} from {ns.source}): part of the change may come from the data")
    if base.sites and new.sites and not any(s.name in {b.name for b in base.sites} for s in new.sites):
        out.append("no site matches by name: are these reports of the same model, in the same format?")
    for key in ("tau", "neuron_axis"):
        if getattr(base.settings, key) != getattr(new.settings, key):
            out.append(f"the reports use different {key} ({getattr(base.settings, key)} vs "
                       f"{getattr(new.settings, key)})")
    return out


def _round(x: float) -> float:
    return round(x, 6)
