"""Per-site counters and the metrics computed from them: the one definition of "dead".

Backends reduce each activation into the increments of `SiteCounters` (on their own
device, in their own way); everything below works on the summed counters only, so
partial scans merge exactly and memory does not grow with the sample.
A site's output is viewed as a matrix (rows, neurons): rows = samples x positions.

`COUNTERS` is the one list of the counter fields: merging, JSON, validation, the
torchrun all-reduce and the backends' accumulators all iterate over it, so a new
counter is one entry here plus the line of each backend that computes it.

Two fields are measured only when a scan asks (`neuron_extremes=True`, which `--neurons`
sets): the per-neuron maximum and minimum. Taking them costs the backends an extra
reduction per site, so the default scan does not, and they are then None and absent from
the JSON (schema v1 only gains keys). `min` stays as it was: the per-neuron minimum of
bounded kinds, always measured, because saturation needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DEFAULT_TAU = 0.025  # ReDo's dormancy threshold (Sokar et al., ICML 2023)
RARELY_ACTIVE = 0.01  # "fires on fewer than 1% of entries" (Dohare et al., Nature 2024)

Merge = Literal["sum", "max", "min"]


@dataclass(frozen=True)
class CounterField:
    """One counter: its name, numpy dtype, whether it has one value per neuron, and how two
    samples' values combine. `bounded_only` counters exist only for kinds with an upper
    bound (the per-neuron minimum, for saturation); elsewhere they are None (null in JSON).
    `on_request` counters exist only when the scan asked for them (`neuron_extremes`);
    elsewhere they are None and absent from the JSON."""

    name: str
    dtype: Literal["int64", "float64"]
    per_neuron: bool
    merge: Merge
    bounded_only: bool = False
    on_request: bool = False

    @property
    def optional(self) -> bool:
        return self.bounded_only or self.on_request

    @property
    def identity(self) -> float:
        """The value of an empty sample: merging with it changes nothing."""
        return {"sum": 0.0, "max": float("-inf"), "min": float("inf")}[self.merge]

    @property
    def is_count(self) -> bool:
        return self.dtype == "int64"

    def empty(self, neurons: int) -> np.ndarray | int | float:
        if self.per_neuron:
            return np.full(neurons, self.identity, self.dtype)
        return int(self.identity) if self.is_count else self.identity

    def combine(self, a: Any, b: Any) -> Any:
        op = {"sum": np.add, "max": np.maximum, "min": np.minimum}[self.merge]
        out = op(a, b)
        if self.per_neuron:
            return out
        return int(out) if self.is_count else float(out)


COUNTERS: tuple[CounterField, ...] = (
    CounterField("rows", "int64", False, "sum"),  # entries per neuron
    CounterField("samples", "int64", False, "sum"),
    CounterField("fires", "int64", True, "sum"),  # entries > 0
    CounterField("sample_fires", "int64", True, "sum"),  # samples with any entry > 0
    CounterField("abs_sum", "float64", True, "sum"),  # sum |y| (finite entries)
    CounterField("min", "float64", True, "min", bounded_only=True),  # per-neuron minimum (saturation)
    CounterField("total", "float64", False, "sum"),  # signed sum of all finite entries
    CounterField("max", "float64", False, "max"),  # largest entry (NaN ignored)
    CounterField("nonfinite", "int64", False, "sum"),  # NaN / inf entries
    CounterField("neuron_max", "float64", True, "max", on_request=True),  # per-neuron maximum (NaN ignored)
    CounterField("neuron_min", "float64", True, "min", on_request=True),  # per-neuron minimum, every kind
)
COUNTER_NAMES = tuple(f.name for f in COUNTERS)


@dataclass
class SiteCounters:
    """Sums and counts over every row seen so far; merging follows each field's `merge`.

    The fields are those of `COUNTERS` (tests/test_stats.py holds the two lists equal).
    """

    neurons: int
    rows: int
    samples: int
    fires: np.ndarray
    sample_fires: np.ndarray
    abs_sum: np.ndarray
    min: np.ndarray | None = None
    total: float = 0.0
    max: float = float("-inf")
    nonfinite: int = 0
    neuron_max: np.ndarray | None = None
    neuron_min: np.ndarray | None = None

    def __post_init__(self) -> None:  # the schema's dtypes, whatever the caller passed
        for f in COUNTERS:
            v = getattr(self, f.name)
            if v is None and f.optional:
                continue
            if f.per_neuron:
                setattr(self, f.name, np.asarray(v, dtype=f.dtype).reshape(self.neurons))
            else:
                setattr(self, f.name, int(v) if f.is_count else float(v))

    @classmethod
    def empty(cls, neurons: int, bounded: bool, extremes: bool = False) -> SiteCounters:
        """The counters of no input at all (per-neuron minimum kept when `bounded`, per-neuron
        maximum and minimum of every kind when `extremes`)."""
        return cls.of(neurons, {f.name: None if (f.bounded_only and not bounded) or (f.on_request and not extremes)
                                else f.empty(neurons) for f in COUNTERS})

    @classmethod
    def of(cls, neurons: int, values: Mapping[str, Any]) -> SiteCounters:
        """Counters from one value per field of COUNTERS (numpy, lists or scalars), cast to
        the schema's dtypes. On-request fields left out are not measured (None)."""
        missing = [f.name for f in COUNTERS if f.name not in values and not f.on_request]
        if missing:
            raise ValueError(f"counters lack {', '.join(missing)}")
        given: dict[str, Any] = {name: values.get(name) for name in COUNTER_NAMES}
        return cls(neurons, **given)

    @property
    def bounded(self) -> bool:
        return self.min is not None

    @property
    def has_extremes(self) -> bool:
        """Whether the per-neuron maximum and minimum were measured (`neuron_extremes`)."""
        return self.neuron_max is not None and self.neuron_min is not None

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def merge(self, other: SiteCounters) -> SiteCounters:
        """The counters of both samples together (neither input is changed). An on-request
        field measured on one side only is not measured for the whole (None)."""
        if other.neurons != self.neurons:
            raise ValueError(f"cannot merge counters of {self.neurons} and {other.neurons} neurons")
        if self.bounded != other.bounded:
            raise ValueError("cannot merge counters with and without per-neuron minimum")
        a, b = self.values(), other.values()
        return SiteCounters.of(self.neurons, {
            f.name: None if a[f.name] is None or b[f.name] is None else f.combine(a[f.name], b[f.name])
            for f in COUNTERS
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON: lists for per-neuron fields; +-inf (an extreme of nothing) as null; on-request
        fields that were not measured are left out."""
        out: dict[str, Any] = {}
        for f in COUNTERS:
            v = getattr(self, f.name)
            if v is None and f.on_request:
                continue
            if v is None:
                out[f.name] = None
            elif f.per_neuron:
                out[f.name] = [_finite_or_none(x) for x in v.tolist()] if f.merge != "sum" else v.tolist()
            else:
                out[f.name] = _finite_or_none(v) if f.merge != "sum" else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteCounters:
        """The inverse of to_dict; a null extreme is the field's identity (an empty sample).
        Trusts its input: reports read from files are checked by validate.py first."""
        neurons = len(d["fires"])
        values: dict[str, Any] = {}
        for f in COUNTERS:
            v = d.get(f.name)
            if v is None:
                values[f.name] = None if f.optional else f.identity
            elif f.per_neuron and f.merge != "sum":
                values[f.name] = [f.identity if x is None else x for x in v]
            else:
                values[f.name] = v
        return cls.of(neurons, values)


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
        sparsity=sparsity(c.fires.sum(), entries),
        nonfinite=c.nonfinite,
        mean=float(c.total / entries) if entries else 0.0,
        max=_finite_or_none(c.max),
    )


def sparsity(fires: int | np.integer, entries: int) -> float:
    """Fraction of entries <= 0, entry-weighted (NeuroBench): one site or a whole model."""
    return float(1.0 - int(fires) / entries) if entries else 0.0


@dataclass(frozen=True)
class ModelMetrics:
    """The per-model summary (SPEC 4). `dead` and `dead_ratio` count grad-blocked sites
    only (the "dying ReLUs"); `dead_all` counts every kind."""

    sites: int
    neurons: int
    dead: int
    dead_ratio: float
    sparsity: float
    dormant: int
    detection_floor: float
    grad_blocked_neurons: int
    dead_all: int


def model_metrics(sites: Iterable[tuple[SiteCounters, SiteMetrics, bool]], samples: int) -> ModelMetrics:
    """Combine (counters, metrics, grad_blocked) of every site: counts add up, ratios are
    recomputed from the sums (never averaged over sites)."""
    items = list(sites)
    blocked = [m for _, m, grad_blocked in items if grad_blocked]
    gb_neurons = sum(m.neurons for m in blocked)
    dead = sum(m.dead for m in blocked)
    return ModelMetrics(
        sites=len(items),
        neurons=sum(m.neurons for _, m, _ in items),
        dead=dead,
        dead_ratio=dead / gb_neurons if gb_neurons else 0.0,
        sparsity=sparsity(sum(int(c.fires.sum()) for c, _, _ in items), sum(c.rows * c.neurons for c, _, _ in items)),
        dormant=sum(m.dormant for _, m, _ in items),
        detection_floor=detection_floor(samples),
        grad_blocked_neurons=gb_neurons,
        dead_all=sum(m.dead for _, m, _ in items),
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
