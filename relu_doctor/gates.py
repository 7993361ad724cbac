"""CI gates: which sites count (--select / --ignore) and whether the report breaches a limit.

A gate fails when a value is strictly *above* its threshold: `--fail-dead-ratio 0.25`
passes a site with exactly 25% dead neurons. Only grad-blocked sites count: dead
neurons of leaky kinds still pass gradient, so they are reported but never fail a gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from .errors import UserError
from .option_values import flag as option_flag
from .option_values import globs, number
from .report import Gates, Site, Violation, summarize

RATIO_GATES = ("fail_dead_ratio", "fail_total_dead_ratio", "fail_provably_dead")


def check_threshold(flag: str, value: Any) -> float | None:
    """The ratio as a float (a numpy number is not JSON); refuse one outside [0, 1]:
    `--fail-dead-ratio 25` (meant as 25%) would never trip."""
    if value is None:
        return None
    value = number(flag, value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        hint = f"For {value:g}% pass {value / 100:g}." if 1 < value <= 100 else None
        raise UserError(f"{option_flag(flag)} is a fraction between 0 and 1 (got {value:g})", hint)
    return value


def selected(sites: Iterable[Site], select: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[Site]:
    """Sites whose name matches a --select glob (all when none) and no --ignore glob."""
    select, ignore = globs("select", select), globs("ignore", ignore)
    return [
        s for s in sites
        if (not select or any(fnmatchcase(s.name, g) for g in select))
        and not any(fnmatchcase(s.name, g) for g in ignore)
    ]


def unmatched(sites: Sequence[Site], patterns: Sequence[str]) -> list[str]:
    """The globs that match no site name: usually a typo that makes a gate count nothing."""
    return [g for g in globs("select", patterns) if not any(fnmatchcase(s.name, g) for s in sites)]


def evaluate(sites: list[Site], fail_dead_ratio: float | None = None,
             fail_total_dead_ratio: float | None = None, fail_provably_dead: float | None = None) -> Gates:
    """Gate the given (already selected) sites; only grad-blocked ones count."""
    fail_dead_ratio = check_threshold("fail_dead_ratio", fail_dead_ratio)
    fail_total_dead_ratio = check_threshold("fail_total_dead_ratio", fail_total_dead_ratio)
    fail_provably_dead = check_threshold("fail_provably_dead", fail_provably_dead)
    gates = Gates()
    blocked = [s for s in sites if s.grad_blocked]
    if fail_dead_ratio is not None:
        gates.checked["fail_dead_ratio"] = fail_dead_ratio
        for s in blocked:
            if s.dead_ratio > fail_dead_ratio:
                gates.violations.append(Violation("fail_dead_ratio", fail_dead_ratio, s.dead_ratio, s.name))
    if fail_total_dead_ratio is not None:
        gates.checked["fail_total_dead_ratio"] = fail_total_dead_ratio
        total = summarize(sites, samples=0).dead_ratio  # dead / neurons over grad-blocked sites
        if total > fail_total_dead_ratio:
            gates.violations.append(Violation("fail_total_dead_ratio", fail_total_dead_ratio, total))
    if fail_provably_dead is not None:  # sites without proofs (no --prove) count as 0
        gates.checked["fail_provably_dead"] = fail_provably_dead
        for s in blocked:
            if s.provably_dead_ratio > fail_provably_dead:
                gates.violations.append(Violation("fail_provably_dead", fail_provably_dead, s.provably_dead_ratio,
                                                  s.name))
    gates.passed = not gates.violations
    return gates


def gate(sites: list[Site], select: Sequence[str] = (), ignore: Sequence[str] = (),
         fail_dead_ratio: float | None = None, fail_total_dead_ratio: float | None = None,
         fail_provably_dead: float | None = None) -> Gates:
    """Pick the sites with --select / --ignore, then evaluate the thresholds on them.

    A --select that matches no site is refused when a gate is set: the gate would count
    nothing and pass silently (a typo in a CI job would never fail it).
    """
    select, ignore = globs("select", select), globs("ignore", ignore)
    gated = fail_dead_ratio is not None or fail_total_dead_ratio is not None or fail_provably_dead is not None
    if gated and select and len(unmatched(sites, select)) == len(select):
        raise UserError(f"--select {' '.join(select)} matches none of the {len(sites)} sites, so the gates "
                        "would count nothing", "Check the globs against the site names in the report.")
    return evaluate(selected(sites, select, ignore), fail_dead_ratio, fail_total_dead_ratio, fail_provably_dead)


def regate(sites: list[Site], select: Sequence[str], ignore: Sequence[str], checked: dict[str, float]) -> Gates:
    """Evaluate the thresholds a report recorded (`gates.checked`) again, e.g. on a merged report."""
    unknown = set(checked) - set(RATIO_GATES)
    if unknown:
        raise UserError(f"unknown gate(s) recorded in the report: {', '.join(sorted(unknown))}",
                        "Rescan with this version of relu-doctor.")
    return gate(sites, select, ignore, checked.get("fail_dead_ratio"), checked.get("fail_total_dead_ratio"),
                checked.get("fail_provably_dead"))
