"""Per-neuron counters as arrays (`scan --neurons FILE.npz`, SPEC 13), for notebook analysis.

One `.npz` keyed `SITEINDEX/fires`, `SITEINDEX/entries`, `SITEINDEX/samples_fired`,
`SITEINDEX/abs_sum`, `SITEINDEX/max`, `SITEINDEX/min` (one value per neuron), plus
`SITEINDEX/samples` (inputs seen by the site) and the arrays `names`, `kinds` and `axes`
(one entry per site, in execution order). The arrays are the report's counters, so every
per-site number of the JSON report follows from them, and the arrays of partial scans
merge exactly (`merge_neuron_arrays`): sums add, extremes take max/min.

`max` and `min` are each neuron's largest and smallest entry (NaN entries ignored), the
counters `neuron_max` / `neuron_min`, which a scan measures only when asked
(`scan(..., neuron_extremes=True)`; `scan --neurons` and `timeline --neurons` ask). For
a report scanned without it (an older report, a watch history recorded without
`neuron_extremes`, a merge with such a part) they are NaN, except `min` of bounded kinds
(relu6, clip), which every scan keeps for saturation; `SITEINDEX/extremes` (a bool) says
whether `max` and `min` were measured. NaN means "not measured" (or no entry seen), never
0. The site's maximum is also `SITEINDEX/site_max`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .stats import RARELY_ACTIVE, dead_mask, saturated_mask

if TYPE_CHECKING:
    from .report import Report, Site

SUMMED = ("fires", "entries", "samples_fired", "abs_sum", "samples")
LARGEST = ("max", "site_max")
SMALLEST = ("min",)
MEASURED_TOGETHER = ("extremes",)  # True only where every part measured max and min
LABELS = ("names", "kinds", "axes")
# Disjoint classes of a site's neurons by how often they fire, in the order charts stack them.
CLASSES = ("dead", "rarely active", "healthy", "always on", "saturated")


def site_arrays(site: Site) -> dict[str, np.ndarray]:
    """The per-neuron arrays of one site (keys without the `SITEINDEX/` prefix)."""
    c = site.counters
    unknown = np.full(c.neurons, np.nan)
    low = c.neuron_min if c.neuron_min is not None else c.min
    return {
        "fires": c.fires.astype(np.int64),
        "entries": np.full(c.neurons, c.rows, np.int64),  # every neuron sees every row of the site
        "samples_fired": c.sample_fires.astype(np.int64),
        "abs_sum": c.abs_sum.astype(np.float64),
        "max": unknown.copy() if c.neuron_max is None else _seen(c.neuron_max, -np.inf),
        "min": unknown.copy() if low is None else _seen(low, np.inf),
        "extremes": np.asarray(c.has_extremes),
        "samples": np.asarray(c.samples, np.int64),
        "site_max": np.asarray(c.max if c.max > -np.inf else np.nan, np.float64)  # -inf: nothing seen,
    }


def _seen(extreme: np.ndarray, identity: float) -> np.ndarray:
    """An extreme with the value of no entry at all (the merge identity) as NaN."""
    return np.where(extreme == identity, np.nan, extreme).astype(np.float64)


def neuron_arrays(report: Report) -> dict[str, np.ndarray]:
    """Every site's arrays under `SITEINDEX/...`, and the site labels."""
    out: dict[str, np.ndarray] = {}
    for site in report.sites:
        for key, value in site_arrays(site).items():
            out[f"{site.index}/{key}"] = value
    out["names"] = np.array([s.name for s in report.sites], dtype=np.str_)
    out["kinds"] = np.array([s.kind for s in report.sites], dtype=np.str_)
    out["axes"] = np.array([s.axis for s in report.sites], dtype=np.int64)
    return out


def neuron_arrays_over_time(reports: Sequence[Report], steps: Sequence[int]) -> dict[str, np.ndarray]:
    """The arrays of a timeline: `SITEINDEX/KEY` of shape (points, neurons) (`samples`,
    `site_max`: (points,)), sites matched by name in first-appearance order, and `steps`.
    A site missing at a point has 0 entries there (counts 0, floats NaN): not measured."""
    first: dict[str, Site] = {}
    for report in reports:
        for s in report.sites:
            first.setdefault(s.name, s)
    out: dict[str, np.ndarray] = {}
    for position, (name, site) in enumerate(first.items()):
        per_point = []
        for report in reports:
            match = next((s for s in report.sites if s.name == name), None)
            per_point.append(site_arrays(match) if match is not None else _unmeasured(site_arrays(site)))
        for key in per_point[0]:
            out[f"{position}/{key}"] = np.stack([p[key] for p in per_point])
    out["names"] = np.array(list(first), dtype=np.str_)
    out["kinds"] = np.array([s.kind for s in first.values()], dtype=np.str_)
    out["axes"] = np.array([s.axis for s in first.values()], dtype=np.int64)
    out["steps"] = np.array(list(steps), dtype=np.int64)
    return out


def _unmeasured(like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else np.zeros_like(v) for k, v in like.items()}


def write_neurons(report: Report | dict[str, np.ndarray], path: Path) -> None:
    """Write a report's arrays (or ready arrays) to `path` atomically (no partial file on any error)."""
    from .files import atomic_path

    arrays = report if isinstance(report, dict) else neuron_arrays(report)
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:  # a file object: numpy would otherwise append ".npz" to the name
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}", "Choose a writable --neurons path.") from None


def read_neurons(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a `--neurons` file (no pickles are loaded)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def merge_neuron_arrays(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays of all parts' samples together: what a scan of the whole sample writes.

    `max` and `min` are merged only where every part measured them (`extremes`; `min` of
    bounded kinds always is): a part scanned without them makes them NaN, not measured,
    since the other parts' extremes alone would be the extremes of part of the sample."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    for part in parts[1:]:
        if set(part) != set(first) or any(not np.array_equal(part[k], first[k]) for k in LABELS):
            raise ValueError("neuron arrays of different models or settings (sites differ)")
    merged: dict[str, np.ndarray] = {}
    for key in first:
        field = key.rsplit("/", 1)[-1]
        values = [np.asarray(p[key]) for p in parts]
        if key in LABELS:
            merged[key] = values[0]
        elif field in MEASURED_TOGETHER:
            merged[key] = np.logical_and.reduce(values)
        elif field in ("max", "min") and not _all_measured(parts, key):
            merged[key] = np.full_like(values[0], np.nan)
        elif field in SUMMED:
            merged[key] = np.sum(values, axis=0, dtype=values[0].dtype)
        elif field in LARGEST:
            merged[key] = np.asarray(np.fmax.reduce(values))  # NaN (not measured) only where all are
        elif field in SMALLEST:
            merged[key] = np.asarray(np.fmin.reduce(values))
        else:
            raise ValueError(f"unknown neuron array {key!r}")
    return merged


def _all_measured(parts: Sequence[Mapping[str, np.ndarray]], key: str) -> bool:
    """Whether every part measured the per-neuron `max` / `min` of `key`'s site."""
    prefix, field = key.rsplit("/", 1)
    if all(bool(np.all(p[f"{prefix}/extremes"])) for p in parts):
        return True
    if field == "min":  # bounded kinds keep their minimum always
        from .kinds import KINDS

        return KINDS[str(parts[0]["kinds"][int(prefix)])].bounded
    return False


def neuron_classes(site: Site) -> dict[str, int]:
    """How many of the site's neurons are dead, rarely active, healthy, always on or saturated.

    The classes are disjoint (saturated neurons are also always on; they count as saturated
    only) and add up to the site's neurons; a site that never ran has none.
    """
    c = site.counters
    if c.rows == 0:
        return dict.fromkeys(CLASSES, 0)
    dead = dead_mask(c)
    rarely = ~dead & (c.fires < RARELY_ACTIVE * c.rows)
    saturated = saturated_mask(c, site.upper_bound)
    always = (c.fires == c.rows) & ~saturated
    healthy = ~(dead | rarely | saturated | always)
    return {name: int(mask.sum()) for name, mask in zip(CLASSES, (dead, rarely, healthy, always, saturated))}
