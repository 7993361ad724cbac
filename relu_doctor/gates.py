"""CI gates: which sites count (--select / --ignore) and whether the report breaches a limit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from .report import Gates, Site, Violation


def selected(sites: Iterable[Site], select: Sequence[str] = (), ignore: Sequence[str] = ()) -> list[Site]:
    """Sites whose name matches a --select glob (all when none) and no --ignore glob."""
    return [
        s for s in sites
        if (not select or any(fnmatchcase(s.name, g) for g in select))
        and not any(fnmatchcase(s.name, g) for g in ignore)
    ]


def evaluate(sites: list[Site], fail_dead_ratio: float | None = None,
             fail_total_dead_ratio: float | None = None) -> Gates:
    """Only grad-blocked sites count: dead leaky neurons still pass gradient."""
    gates = Gates()
    blocked = [s for s in sites if s.grad_blocked]
    if fail_dead_ratio is not None:
        gates.checked["fail_dead_ratio"] = fail_dead_ratio
        for s in blocked:
            if s.dead_ratio > fail_dead_ratio:
                gates.violations.append(Violation("fail_dead_ratio", fail_dead_ratio, s.dead_ratio, s.name))
    if fail_total_dead_ratio is not None:
        gates.checked["fail_total_dead_ratio"] = fail_total_dead_ratio
        neurons = sum(s.neurons for s in blocked)
        total = sum(s.dead for s in blocked) / neurons if neurons else 0.0
        if total > fail_total_dead_ratio:
            gates.violations.append(Violation("fail_total_dead_ratio", fail_total_dead_ratio, total))
    gates.passed = not gates.violations
    return gates
