"""Timeline: dead neurons across points of a training run (watch windows or checkpoints).

Each point is one Report at one step. Per site: the dead ratio at each point; per neuron:
the step it died at (the first point from which it stayed dead to the last point) and
whether it ever revived (dead at a point, alive at a later one). Sites are matched by
name; a site missing at a point has no value there (and breaks a "stayed dead" run).
Dead is the report's own definition (stats.dead_mask via Site.dead_indices).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError
from ..report import Report

SCHEMA = "relu-doctor/timeline/v1"


@dataclass
class TimelinePoint:
    step: int
    label: str  # where it came from: "steps 100-109", a checkpoint file name
    summary: dict[str, Any]  # the point's report summary
    report: Report | None = field(default=None, repr=False, compare=False)  # not serialised

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"step": self.step, "label": self.label, "summary": self.summary}
        if self.report is not None:
            d["sample"] = {k: self.report.sample.get(k) for k in ("source", "samples", "steps")
                           if self.report.sample.get(k) is not None}
            if self.report.model.get("path"):
                d["model"] = self.report.model.get("path")
        return d


@dataclass
class TimelineSite:
    name: str
    kind: str
    grad_blocked: bool
    neurons: int
    dead_ratio: list[float | None]  # per point; None where the site did not run
    dead: list[int | None]
    died_at: dict[int, int]  # neuron -> step from which it stayed dead (dead at the last point)
    revived: dict[int, int]  # neuron -> the last step at which it fired again after being dead

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["died_at"] = {str(k): v for k, v in sorted(self.died_at.items())}
        d["revived"] = {str(k): v for k, v in sorted(self.revived.items())}
        return d


@dataclass
class NewDeadViolation:
    site: str
    new_dead: int
    neurons: int
    threshold_pp: float

    @property
    def points(self) -> float:
        return 100.0 * self.new_dead / self.neurons

    def describe(self) -> str:
        return (f"site {self.site}: {self.new_dead} of {self.neurons} neurons died since the first point "
                f"({self.points:.1f} pp > {self.threshold_pp:g} pp)")


@dataclass
class Timeline:
    source: str  # "history" | "checkpoints"
    points: list[TimelinePoint]
    sites: list[TimelineSite]
    fail_new_dead: float | None = None
    violations: list[NewDeadViolation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [p.step for p in self.points]

    @property
    def passed(self) -> bool:
        return not self.violations

    def site(self, name: str) -> TimelineSite:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "source": self.source,
            "points": [p.to_dict() for p in self.points],
            "sites": [s.to_dict() for s in self.sites],
            "gates": {
                "passed": self.passed,
                "checked": {} if self.fail_new_dead is None else {"fail_new_dead": self.fail_new_dead},
                "violations": [{**asdict(v), "points": v.points} for v in self.violations],
            },
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"


def build_timeline(points: Sequence[tuple[int, str, Report]], source: str, fail_new_dead: float | None = None,
                   warnings: Sequence[str] = ()) -> Timeline:
    """A Timeline of (step, label, report) points, already in order."""
    check_new_dead(fail_new_dead)
    if not points:
        raise UserError("a timeline needs at least one point")
    order: dict[str, Any] = {}  # site name -> its first Site, in first-appearance order
    for _, _, report in points:
        for s in report.sites:
            first = order.setdefault(s.name, s)
            if first.neurons != s.neurons or first.kind != s.kind:
                raise UserError(f"site {s.name} changes from {first.neurons} {first.kind} neurons to "
                                f"{s.neurons} {s.kind} between points: not the same model",
                                "A timeline compares checkpoints of one architecture.")
    steps = [step for step, _, _ in points]
    sites = [_site_timeline(name, first, [_find(r, name) for _, _, r in points], steps)
             for name, first in order.items()]
    timeline = Timeline(
        source=source,
        points=[TimelinePoint(step, label, asdict(r.summary), r) for step, label, r in points],
        sites=sites, fail_new_dead=fail_new_dead, warnings=list(warnings),
    )
    if fail_new_dead is not None:
        timeline.violations = new_dead_violations(timeline, fail_new_dead)
    return timeline


def _find(report: Report, name: str) -> Any:
    for s in report.sites:
        if s.name == name:
            return s
    return None


def _site_timeline(name: str, first: Any, per_point: list[Any], steps: list[int]) -> TimelineSite:
    dead_sets: list[set[int] | None] = [None if s is None else set(s.dead_indices) for s in per_point]
    died_at: dict[int, int] = {}
    revived: dict[int, int] = {}
    last = dead_sets[-1]
    for neuron in sorted(last or ()):
        i = len(dead_sets) - 1
        while i > 0 and dead_sets[i - 1] is not None and neuron in dead_sets[i - 1]:  # type: ignore[operator]
            i -= 1
        died_at[neuron] = steps[i]
    seen_dead: set[int] = set()
    for i, dead in enumerate(dead_sets):
        if dead is None:
            continue
        for neuron in seen_dead - dead:
            revived[neuron] = steps[i]
        seen_dead |= dead
    return TimelineSite(
        name=name, kind=first.kind, grad_blocked=first.grad_blocked, neurons=first.neurons,
        dead_ratio=[None if s is None else float(s.dead_ratio) for s in per_point],
        dead=[None if s is None else int(s.dead) for s in per_point],
        died_at=died_at, revived=revived,
    )


def check_new_dead(pp: float | None) -> None:
    if pp is not None and not 0 <= pp <= 100:
        raise UserError(f"--fail-new-dead is in percentage points, between 0 and 100 (got {pp:g})")


def new_dead_violations(timeline: Timeline, pp: float) -> list[NewDeadViolation]:
    """Grad-blocked sites where the neurons dead at the last point but alive at the first exceed PP."""
    out = []
    for s in timeline.sites:
        if not s.grad_blocked or s.dead[0] is None or s.dead[-1] is None or len(timeline.points) < 2:
            continue
        first, last = timeline.points[0].report, timeline.points[-1].report
        if first is None or last is None:
            continue
        before = set(first.site(s.name).dead_indices)
        new = len(set(last.site(s.name).dead_indices) - before)
        if 100.0 * new / s.neurons > pp:
            out.append(NewDeadViolation(s.name, new, s.neurons, pp))
    return out


def from_history(reports: Sequence[Report], fail_new_dead: float | None = None,
                 warnings: Sequence[str] = ()) -> Timeline:
    """A watch history: each report is a point at the last step of its window (or its probe step).

    A run resumed (or restarted) into the same file goes back in steps: its reports replace
    the earlier ones from that step on, as the later run is the one that continued."""
    points: list[tuple[int, str, Report]] = []
    notes = list(warnings)
    for i, r in enumerate(reports):
        steps = r.sample.get("steps")
        step = int(steps[-1]) if steps else i
        label = f"steps {steps[0]}-{steps[-1]}" if steps and steps[0] != steps[-1] else f"step {step}"
        if points and step <= points[-1][0]:
            dropped = sum(1 for p in points if p[0] >= step)
            points = [p for p in points if p[0] < step]
            notes.append(f"report {i + 1} goes back to step {step} (a resumed run?): it replaces "
                         f"{dropped} earlier report(s) from that step on")
        points.append((step, label, r))
    return build_timeline(points, "history", fail_new_dead, notes)
