"""Turn the per-batch outputs of an instrumented ONNX graph into a site's SiteCounters.

The graph returns partials per (row, neuron) of each site output; here they are grouped
by sample and summed over the batch's valid samples in int64 / float64: the same
counters backends/torch_reduce.py produces. As in the torch backend, a site whose first
axis is a multiple of the batch (relu(x.reshape(B * T, F))) is split back into samples,
(B, T, F); one whose first axis is not is counted whole, with a warning.
A batch whose fast partials are not all finite (NaN, inf, or a float32 sum that
overflowed) is refused (`add` returns False): the caller re-runs it with the site's raw
output, which `add_raw` reduces exactly, non-finite entries counted apart.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..kinds import KINDS
from ..kinds.axis import neuron_axis
from ..stats import SiteCounters
from .onnx_instrument import POOL, REDUCE, SitePlan


class SiteAccumulator:
    """Running int64 / float64 sums for one site."""

    def __init__(self, plan: SitePlan, neuron_axis_override: str) -> None:
        self.plan = plan
        self.override = neuron_axis_override
        self.nonnegative = KINDS[plan.site.kind].nonnegative
        self.bounded = KINDS[plan.site.kind].bounded
        self.extremes = plan.extremes
        self.axis = plan.axis  # reported: in the per-sample view (one more when rows were split)
        self.shape = plan.shape
        self.neurons = plan.neurons
        self.warnings: list[str] = []
        self._split: int | None = None  # rows per sample, once the first batch has shown it
        # The running counters; a raw plan learns its neuron count from its first batch.
        self.sums: SiteCounters | None = None if self.neurons is None else SiteCounters.empty(
            self.neurons, self.bounded, self.extremes)

    @property
    def ran(self) -> bool:
        return self.sums is not None and self.sums.samples > 0

    def _rows_per_sample(self, rows: int, batch_rows: int) -> int:
        """k when the site's first axis holds k rows per input; 0 when it cannot be split."""
        if rows == batch_rows:
            k = 1
        elif batch_rows and rows % batch_rows == 0:
            k = rows // batch_rows
        else:
            k = 0
            if not self.warnings:
                self.warnings.append(f"site {self.plan.site.name}: its first axis ({rows}) is not the batch "
                                     f"({batch_rows}), so its per-sample counts (sample_fires) count rows, not inputs")
        if self._split is None:
            self._split = k
            if k > 1 and self.shape is not None and self.axis is not None:  # report the per-sample view
                self.shape, self.axis = [k, *self.shape], self.axis + 1
        return k

    def add(self, outputs: dict[str, np.ndarray], valid: int, batch_rows: int) -> bool:
        """Add one batch of a pool / reduce / raw plan; False when it must be re-run exactly."""
        if self.plan.method not in (POOL, REDUCE):
            self.add_raw(outputs["raw"], valid, batch_rows)
            return True
        c, p = self.neurons or 0, self.plan.positions or 0
        rows = outputs["pool" if self.plan.method == POOL else "sum"].shape[0]
        if rows == 0:  # a site in the If branch this batch did not take
            return True
        if self.plan.method == POOL:  # one (rows, parts x c, 1, ...) block: split it into its parts
            block = outputs["pool"].reshape(rows, -1, c)
            outputs = {role: block[:, i] for i, role in enumerate(self.plan.pool_parts)}
        part = {role: a.reshape(rows, c).astype(np.float64) for role, a in outputs.items() if a.ndim}
        top = float(outputs["max"]) if outputs["max"].ndim == 0 else float(part["max"].max(initial=-np.inf))
        if not (np.isfinite(top) and all(np.isfinite(a).all() for a in part.values())):
            return False
        if self.plan.method == POOL:  # means over the p positions of each row: back to sums
            sums, counts = part["mean"] * p, part["count_mean"] * p
            abs_sums = sums if self.nonnegative else np.maximum(2 * part["pos_mean"] * p - sums, np.abs(sums))
            # min = -max(-y); 0 - x, not -x: a minimum of 0 stays 0.0, not -0.0, as in torch
            mins = 0.0 - part["neg_max"] if "neg_max" in part else None
            tops = part["max"] if self.extremes else None
        else:
            sums, counts = part["sum"], part["count"]
            abs_sums = sums if self.nonnegative else part["abs"]
            mins, tops = part.get("min"), part.get("row_max")
        fired = np.minimum(np.rint(counts), p).astype(np.int64)
        fired[(fired == 0) & (counts > 0)] = 1  # a positive entry too small to count as 1 still fired
        k = self._rows_per_sample(rows, batch_rows)
        if k:  # rows -> samples (k rows each), padding samples dropped
            n = min(valid, rows // k)
            fired, abs_sums, sums = (_by_sample(a, k, n, np.sum) for a in (fired, abs_sums, sums))
            mins = None if mins is None else _by_sample(mins, k, n, np.min)
            tops = None if tops is None else _by_sample(tops, k, n, np.max)
        else:
            n, k = rows, 1
        self._accumulate(fired, abs_sums, float(sums.sum()), top, mins, n, p * k, tops=tops)
        return True

    def add_raw(self, y: np.ndarray, valid: int, batch_rows: int) -> None:
        """Reduce a site's output exactly (float64; NaN/inf counted apart, as the torch backend does)."""
        if y.ndim == 0 or y.shape[0] == 0:
            return
        axis = self.plan.axis if self.plan.axis is not None else neuron_axis(
            y.ndim, self.plan.site.axis_rule, self.override)
        k = self._rows_per_sample(y.shape[0], batch_rows)
        if k > 1:
            y, axis = y.reshape(batch_rows, k, *y.shape[1:]), axis + 1
        if k:
            y = y[: min(valid, y.shape[0])]
        y3, red = _rows_positions_neurons(y, axis)
        c = y3.shape[2 if red == 1 else 1]
        if self.neurons is None:
            self.axis, self.shape, self.neurons = axis, list(y.shape[1:]), c
            self.sums = SiteCounters.empty(c, self.bounded, self.extremes)
        elif c != self.neurons:
            raise UserError(f"site {self.plan.site.name} changed its number of neurons between batches "
                            f"({self.neurons} -> {c})")
        finite = np.isfinite(y3)
        nonfinite = int(y3.size - np.count_nonzero(finite))
        y64 = np.where(finite, y3, 0).astype(np.float64)
        fired = np.count_nonzero(y3 > 0, axis=red)
        sums = y64.sum(red)
        abs_sums = sums if self.nonnegative else np.abs(y64).sum(red)
        nan = np.isnan(y3)  # as the torch path: extremes ignore NaN; inf is a real extreme
        top = float(np.where(nan, -np.inf, y3).max()) if y3.size else float("-inf")
        low = self.bounded or self.extremes
        mins = np.where(nan, np.inf, y3).min(axis=red).astype(np.float64) if low and y3.size else None
        tops = np.where(nan, -np.inf, y3).max(axis=red).astype(np.float64) if self.extremes and y3.size else None
        self._accumulate(fired.astype(np.int64), abs_sums, float(sums.sum()), top, mins, y3.shape[0],
                         y3.shape[red], nonfinite, tops)

    def _accumulate(self, fired: np.ndarray, abs_sums: np.ndarray, total: float, top: float,
                    mins: np.ndarray | None, samples: int, positions: int, nonfinite: int = 0,
                    tops: np.ndarray | None = None) -> None:
        """Add one batch's (samples, neurons) partials: the batch becomes counters of its
        own, merged by the counter schema's rules."""
        assert self.sums is not None and self.neurons is not None
        low = high = None
        if self.bounded or self.extremes:
            low = mins.min(0) if mins is not None and mins.size else np.full(self.neurons, np.inf)
        if self.extremes:
            high = tops.max(0) if tops is not None and tops.size else np.full(self.neurons, -np.inf)
        batch = SiteCounters.of(self.neurons, {
            "rows": samples * positions, "samples": samples, "fires": fired.sum(0),
            "sample_fires": (fired > 0).sum(0), "abs_sum": abs_sums.sum(0), "min": low if self.bounded else None,
            "total": total, "max": top, "nonfinite": nonfinite,
            "neuron_max": high, "neuron_min": low if self.extremes else None,
        })
        self.sums = self.sums.merge(batch)

    def counters(self) -> SiteCounters:
        return self.sums if self.sums is not None else SiteCounters.empty(0, self.bounded, self.extremes)


def _by_sample(a: np.ndarray, k: int, n: int, reduce: np.ufunc | object) -> np.ndarray:
    """(samples x k rows, c) partials -> (n samples, c), combined over each sample's k rows."""
    return reduce(a.reshape(-1, k, a.shape[-1])[:n], axis=1)  # type: ignore[operator]


def _rows_positions_neurons(y: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """y (samples first) as 3-D with the neuron axis kept, and the axis to reduce (the
    numpy twin of torch_reduce.as_rows_positions_neurons)."""
    n = y.shape[0]
    if y.ndim == 1:
        return y.reshape(n, 1, 1), 2
    if axis == 1:
        return y.reshape(n, y.shape[1], -1), 2
    if axis != y.ndim - 1:
        y = np.moveaxis(y, axis, -1)
    return y.reshape(n, -1, y.shape[-1]), 1
