"""Per-site counters and the metrics computed from them: the one definition of "dead".

Backends reduce each activation into the increments of `SiteCounters` (on their own
device, in their own way); everything below works on the summed counters only, so
partial scans merge exactly and memory does not grow with the sample.
A site's output is viewed as a matrix (rows, neurons): rows = samples x positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_TAU = 0.025  # ReDo's dormancy threshold (Sokar et al., ICML 2023)
RARELY_ACTIVE = 0.01  # "fires on fewer than 1% of entries" (Dohare et al., Nature 2024)


@dataclass
class SiteCounters:
    """Sums and counts over every row seen so far; merging is addition (max/min for extremes)."""

    neurons: int
    rows: int = 0  # entries per neuron
    samples: int = 0
    fires: np.ndarray = field(default=None)  # type: ignore[assignment]  # entries > 0, int64
    sample_fires: np.ndarray = field(default=None)  # type: ignore[assignment]  # samples with any entry > 0
    abs_sum: np.ndarray = field(default=None)  # type: ignore[assignment]  # sum |y|, float64
    min: np.ndarray | None = None  # per-neuron minimum, kept for bounded kinds (saturation)
    total: float = 0.0  # signed sum of all entries
    max: float = float("-inf")
    nonfinite: int = 0

    def __post_init__(self) -> None:
        c = self.neurons
        self.fires = np.zeros(c, np.int64) if self.fires is None else np.asarray(self.fires, np.int64)
        self.sample_fires = (
            np.zeros(c, np.int64) if self.sample_fires is None else np.asarray(self.sample_fires, np.int64)
        )
        self.abs_sum = np.zeros(c, np.float64) if self.abs_sum is None else np.asarray(self.abs_sum, np.float64)
        if self.min is not None:
            self.min = np.asarray(self.min, np.float64)

    def merge(self, other: SiteCounters) -> SiteCounters:
        """The counters of both samples together (neither input is changed)."""
        if other.neurons != self.neurons:
            raise ValueError(f"cannot merge counters of {self.neurons} and {other.neurons} neurons")
        if (self.min is None) != (other.min is None):
            raise ValueError("cannot merge counters with and without per-neuron minimum")
        return SiteCounters(
            neurons=self.neurons,
            rows=self.rows + other.rows,
            samples=self.samples + other.samples,
            fires=self.fires + other.fires,
            sample_fires=self.sample_fires + other.sample_fires,
            abs_sum=self.abs_sum + other.abs_sum,
            min=None if self.min is None else np.minimum(self.min, other.min),  # type: ignore[arg-type]
            total=self.total + other.total,
            max=max(self.max, other.max),
            nonfinite=self.nonfinite + other.nonfinite,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "samples": self.samples,
            "fires": self.fires.tolist(),
            "sample_fires": self.sample_fires.tolist(),
            "abs_sum": self.abs_sum.tolist(),
            "min": None if self.min is None else [_finite_or_none(v) for v in self.min.tolist()],
            "total": self.total,
            "max": _finite_or_none(self.max),
            "nonfinite": self.nonfinite,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiteCounters:
        return cls(
            neurons=len(d["fires"]),
            rows=int(d["rows"]),
            samples=int(d["samples"]),
            fires=np.array(d["fires"], np.int64),
            sample_fires=np.array(d["sample_fires"], np.int64),
            abs_sum=np.array(d["abs_sum"], np.float64),
            min=None if d.get("min") is None else np.array([np.inf if v is None else v for v in d["min"]]),
            total=float(d["total"]),
            max=float("-inf") if d.get("max") is None else float(d["max"]),
            nonfinite=int(d["nonfinite"]),
        )


@dataclass(frozen=True)
class SiteMetrics:
    neurons: int
    dead: int
    dead_ratio: float
    dead_indices: list[int]
    always_on: int
    saturated: int
    dormant: int
    rarely_active: int
    sparsity: float
    nonfinite: int
    mean: float
    max: float | None


def dead_mask(c: SiteCounters) -> np.ndarray:
    """Never positive on any input, at any position."""
    return c.fires == 0


def apoz(c: SiteCounters) -> np.ndarray:
    """Average percentage of zeros per neuron: the fraction of entries <= 0 (Hu et al. 2016)."""
    return 1.0 - c.fires / max(c.rows, 1)


def sample_fire_rate(c: SiteCounters) -> np.ndarray:
    """Fraction of the inputs on which each neuron fired anywhere."""
    return c.sample_fires / max(c.samples, 1)


def dormant_mask(c: SiteCounters, tau: float = DEFAULT_TAU) -> np.ndarray:
    """ReDo: s_i = mean|y_i| / mean_k mean|y_k| <= tau; all dormant when every mean is 0."""
    mean_abs = c.abs_sum / max(c.rows, 1)
    layer_mean = mean_abs.mean() if c.neurons else 0.0
    if layer_mean == 0 or not np.isfinite(layer_mean):
        return np.full(c.neurons, layer_mean == 0)
    return mean_abs / layer_mean <= tau


def saturated_mask(c: SiteCounters, upper_bound: float | None) -> np.ndarray:
    """Every entry >= the upper bound: no gradient on either side."""
    if upper_bound is None or c.min is None or c.rows == 0:
        return np.zeros(c.neurons, bool)
    return c.min >= upper_bound


def site_metrics(c: SiteCounters, upper_bound: float | None, tau: float = DEFAULT_TAU) -> SiteMetrics:
    dead = dead_mask(c)
    entries = c.rows * c.neurons
    seen = c.rows > 0
    rarely = (c.fires > 0) & (c.fires < RARELY_ACTIVE * c.rows)
    return SiteMetrics(
        neurons=c.neurons,
        dead=int(dead.sum()) if seen else 0,
        dead_ratio=float(dead.mean()) if seen and c.neurons else 0.0,
        dead_indices=np.flatnonzero(dead).tolist() if seen else [],
        always_on=int((c.fires == c.rows).sum()) if seen else 0,
        saturated=int(saturated_mask(c, upper_bound).sum()),
        dormant=int(dormant_mask(c, tau).sum()) if seen else 0,
        rarely_active=int(rarely.sum()),
        sparsity=float(1.0 - c.fires.sum() / entries) if entries else 0.0,
        nonfinite=c.nonfinite,
        mean=float(c.total / entries) if entries else 0.0,
        max=_finite_or_none(c.max),
    )


def detection_floor(samples: int) -> float:
    """Rule of three: a neuron firing on fewer than this fraction of inputs looks dead here
    with 5% chance: 1 - 0.05^(1/S), about 3/S."""
    return 1.0 - 0.05 ** (1.0 / samples) if samples > 0 else 1.0


def small_sample_warning(samples: int) -> str | None:
    """The warning for a sample too small to call a neuron dead with a 1% floor, or None."""
    floor = detection_floor(samples)
    if floor <= 0.01:
        return None
    return (f"{samples} samples: a neuron firing on fewer than {floor:.1%} of inputs can look "
            "dead by chance (5% risk); scan about 300 or more for a 1% floor")


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
