"""Checks of single values in a report read from a file: each returns the value, of the type
the report's readers expect, or stops the check with where it is and what is wrong.

JSON says little about a value (a bool is an int to Python, an integer may have thousands
of digits, a number may be too large to add up): these say what a count, a number and a
string of a report are, once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

MAX_COUNT = 2**53  # counts above this are not exact in the float64 metrics


class Invalid(Exception):
    """A report value that breaks a rule; validate.check_report turns it into a UserError."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def fail(where: str, problem: str) -> NoReturn:
    raise Invalid(where, problem)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_int(v: Any, where: str) -> int:
    if not is_int(v) or abs(v) > MAX_COUNT:
        fail(where, f"{short(v)} is not an integer")
    return int(v)


def as_count(v: Any, where: str) -> int:
    if not is_int(v) or not 0 <= v <= MAX_COUNT:
        fail(where, f"{short(v)} is not a count (an integer from 0 to 2**53)")
    return int(v)


def as_number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1e300:
        fail(where, f"{short(v)} is not a finite number")
    return float(v)


def as_str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        fail(where, f"{short(v)} is not a string")
    return v


def as_dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        fail(where, f"a {type(v).__name__}, not an object")
    return v


def as_list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        fail(where, f"a {type(v).__name__}, not a list")
    return v


def as_counts(items: list[Any], where: str) -> np.ndarray:
    """A list of counts as int64; the builtins' fast path first (reports hold millions)."""
    if all(type(x) is int for x in items) and (not items or (min(items) >= 0 and max(items) <= MAX_COUNT)):
        return np.array(items, np.int64)
    return np.array([as_count(x, f"{where}[{i}]") for i, x in enumerate(items)], np.int64)


def as_numbers(items: list[Any], where: str, null: float | None) -> np.ndarray:
    """A list of finite numbers as float64; `null` (when not None) stands for a JSON null."""
    if all(type(x) in (int, float) for x in items):
        a = np.array(items, np.float64)
        if np.isfinite(a).all() and (not a.size or np.abs(a).max() <= 1e300):
            return a
    return np.array([null if x is None and null is not None else as_number(x, f"{where}[{i}]")
                     for i, x in enumerate(items)], np.float64)


def check_optional(d: dict[str, Any], key: str, check: Callable[[Any, str], Any], where: str) -> None:
    if d.get(key) is not None:
        check(d[key], f"{where}.{key}")


def at_most(a: np.ndarray, bound: np.ndarray | int, where: str, what: str) -> None:
    over = np.flatnonzero(a > bound)
    if over.size:
        i = int(over[0])
        limit = bound if isinstance(bound, int) else int(bound[i])
        fail(f"{where}[{i}]", f"{int(a[i])} is more than its {limit} {what}")


def short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def check_derived(written: dict[str, Any], computed: Any, counts: tuple[str, ...], where: str, source: str) -> None:
    """Numbers a report writes beside what they are computed from must be what they compute
    to: the `counts` exactly, dead_ratio and sparsity to rounding. `source` names what
    computed them, for the message ("the counters", "the sites")."""
    for key in counts:
        if key in written and not (is_int(written[key]) and written[key] == getattr(computed, key)):
            fail(f"{where}.{key}", f"{short(written[key])}, but {source} give {getattr(computed, key)}")
    for key in ("dead_ratio", "sparsity"):
        if key in written and not math.isclose(as_number(written[key], f"{where}.{key}"), getattr(computed, key),
                                               rel_tol=1e-9, abs_tol=1e-12):
            fail(f"{where}.{key}", f"{written[key]}, but {source} give {getattr(computed, key)}")

