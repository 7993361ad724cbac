"""The API's keyword values checked as the CLI's flags are (typer types those): a number
where one is needed, a whole number where it must be, else a UserError that names the flag.
"""

from __future__ import annotations

import numbers
from typing import Any

from .errors import UserError


def flag(name: str) -> str:
    """`fail_dead_ratio` -> `--fail-dead-ratio`, the name a CLI user knows."""
    return "--" + name.replace("_", "-")


def number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{flag(name)} must be a number (got {value!r})")
    return float(value)


def whole(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{flag(name)} must be a whole number (got {value!r})")
    if value < minimum:
        raise UserError(f"{flag(name)} must be at least {minimum} (got {value})")
    return int(value)


def globs(name: str, value: Any) -> list[str]:
    """--select / --ignore patterns: one string is one pattern (not one per character)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        patterns = list(value)
    except TypeError:
        patterns = [value]
    if not all(isinstance(p, str) for p in patterns):
        raise UserError(f"{flag(name)} takes glob patterns (got {value!r})", "Give a string or a list of them.")
    return patterns
