"""What verification checks at each patched site, and what it found.

At every call of a patched site, the leaky op's input x and output y are checked
against the plan (never against the slopes stored in the model, which could be wrong):

- channel mode, live neurons: y is ReLU(x) exactly: the same value on every input, the
  same bits wherever x is finite and non-zero (PReLU gives a zero of the other sign
  at x = +-0, which no arithmetic downstream can tell apart);
- leaking neurons (dead ones; all of them in layer mode): y = x for x > 0, slope * x
  otherwise, so a dead neuron is now non-zero on negative inputs;
- relu6 / clip sites: x never exceeds the upper bound (it is clamped before the leak).

The format-specific runners (verify_torch.py, verify_onnx.py) feed these checks; this
module only needs numpy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .leak_check import bits, leak_is_exact
from .plan import CHANNEL, PatchPlan, SitePatch

TIMING_RUNS = 3  # counted runs per model at least (PairTimer); the fastest counts


@dataclass
class SiteCheck:
    patch: SitePatch
    calls: int = 0
    live_entries: int = 0
    live_changed: int = 0  # live entries whose value differs from ReLU(x)
    live_bits_changed: int = 0  # ... whose bits differ, where x is finite and non-zero
    leak_entries: int = 0
    leak_wrong: int = 0  # leaking entries that are not x (x > 0) or slope * x
    negative_inputs: int = 0  # entries of dead neurons with x < 0 ...
    leaking: int = 0  # ... and y != 0 there
    over_bound: int = 0
    probed: bool = True  # False where the runner cannot reach the site (an ONNX If branch)
    notes: list[str] = field(default_factory=list)  # problems found by the runner itself
    new_name: str | None = None  # the site's name in a rescan of the output
    new_kind: str | None = None

    def add(self, x: np.ndarray, y: np.ndarray, axis: int, rtol: float | None = None) -> None:
        """One call: x, y with the batch first; `axis` is the neuron axis of x.

        `rtol` bounds the rounding of slope * x (default: from x's dtype; pass it for a
        bfloat16 model, whose values arrive as float32).

        Live and dead neurons are taken apart first (np.take along the neuron axis), so each
        check reads only the entries it is about: on ResNet-18 the full-size masks of the
        whole activation made these checks cost 3 times the patched model's own run.
        """
        p = self.patch
        self.calls += 1
        if x.shape != y.shape or x.ndim <= axis or x.shape[axis] != p.neurons:
            self.notes.append(f"input {x.shape} / output {y.shape} do not fit {p.neurons} neurons on axis {axis}")
            return
        if x.dtype not in (np.float32, np.float64, np.float16):
            x, y = x.astype(np.float32), y.astype(np.float32)
        dead = np.zeros(p.neurons, bool)
        dead[list(p.dead)] = True
        x_dead, y_dead = _neurons(x, dead, axis), _neurons(y, dead, axis)
        negative = x_dead < 0
        self.negative_inputs += int(np.count_nonzero(negative))
        self.leaking += int(np.count_nonzero(negative & (y_dead != 0)))
        if p.upper is not None:
            self.over_bound += int(np.count_nonzero(x > p.upper))
        if self._exact(x, y, axis, dead):
            return
        if p.mode == CHANNEL:
            x_live, y_live = _neurons(x, ~dead, axis), _neurons(y, ~dead, axis)
            relu = np.where(x_live > 0, x_live, np.zeros((), x.dtype))
            self.live_entries += x_live.size
            self.live_changed += int(x_live.size - np.count_nonzero(_same(y_live, relu)))
            defined = np.isfinite(x_live) & (x_live != 0)
            self.live_bits_changed += int(np.count_nonzero(defined & (bits(y_live) != bits(relu))))
            x_leak, y_leak = x_dead, y_dead
        else:
            x_leak, y_leak = x, y
        leak = np.where(x_leak > 0, x_leak, x_leak * np.asarray(p.slope, x.dtype))
        self.leak_entries += x_leak.size
        self.leak_wrong += _count_not_close(y_leak, leak, rtol)

    def _exact(self, x: np.ndarray, y: np.ndarray, axis: int, dead: np.ndarray) -> bool:
        """The common case in one pass: y has the very bits of where(x > 0, x, slopes * x),
        slopes along the neuron axis being the plan's (-0.0 on live neurons). Then, on
        finite inputs, every live entry is ReLU(x) bit for bit
        (x = +-0 aside, which the bit check leaves out) and every leaking one is exactly
        slope * x: the checks below would find nothing, so they are skipped. Anything else
        (a difference, a NaN or infinite input) takes them, entry by entry. At x = +-0 any
        zero passes them all, whatever its sign."""
        p = self.patch
        # from the plan's facts, not SitePatch.slopes (what the writers use): -0.0 on live
        # neurons, whose -0.0 * x is ReLU's +0.0 for x < 0
        live_slope = -0.0 if p.mode == CHANNEL else p.slope
        slopes = np.where(dead, np.asarray(p.slope, x.dtype), np.asarray(live_slope, x.dtype))
        if not leak_is_exact(x, y, slopes, axis, require_finite=p.mode == CHANNEL):
            return False
        per_neuron = x.size // p.neurons
        dead_entries = int(dead.sum()) * per_neuron
        if p.mode == CHANNEL:
            self.live_entries += x.size - dead_entries
            self.leak_entries += dead_entries
        else:
            self.leak_entries += x.size
        return True

    def problems(self) -> list[str]:
        out = list(self.notes)
        if self.calls == 0 and self.probed and not out:
            out.append("its leaky op never ran")
        if self.live_changed:
            out.append(f"{self.live_changed} of {self.live_entries} live-neuron outputs changed value")
        if self.live_bits_changed:
            out.append(f"{self.live_bits_changed} live-neuron outputs changed bits")
        if self.leak_wrong:
            out.append(f"{self.leak_wrong} of {self.leak_entries} leaking outputs are not slope * x")
        if self.over_bound:
            out.append(f"{self.over_bound} inputs above the upper bound {self.patch.upper:g} reached the leak")
        return out


def _neurons(a: np.ndarray, which: np.ndarray, axis: int) -> np.ndarray:
    """The entries of the neurons `which` (a mask over the neuron axis) of `a`."""
    if which.all():
        return a
    return np.take(a, np.flatnonzero(which), axis=axis)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    same = a == b
    if a.dtype.kind == "f" and not same.all():
        same |= np.isnan(a) & np.isnan(b)
    return same


def _count_not_close(a: np.ndarray, b: np.ndarray, rtol: float | None = None) -> int:
    """Entries where a is neither b (NaN equal to NaN) nor within rtol of it; np.isclose
    only on the entries that differ (it makes several full-size temporaries)."""
    if rtol is None:
        rtol = 1e-6 if a.dtype != np.float16 else 1e-3
    differ = ~_same(a, b)
    if not differ.any():
        return 0
    return int(np.count_nonzero(~np.isclose(a[differ], b[differ], rtol=rtol, atol=0.0)))



@dataclass
class Verification:
    """The outcome of reloading the written model and running the sample through it."""

    checks: list[SiteCheck]
    samples: int = 0  # sample inputs run through both models
    fresh: int = 0  # fresh random inputs run through the patched model
    max_abs_change: float = 0.0  # model outputs, patched vs original, on the sample
    # seconds per batch of the sample, timed on the original's scan and the output's rescan:
    # both under the same capture, the checks' own time left out (verify_pass.best_seconds)
    seconds_original: float = 0.0
    seconds_patched: float = 0.0
    timed_batch: int = 0  # rows per timed batch
    # set where the original and the written model ran in different runtimes (an eager model
    # patched --to onnx): max |change| then includes the export's rounding, and the times
    # compare runtimes as much as the patch
    original_runtime: str | None = None
    patched_runtime: str | None = None
    problems: list[str] = field(default_factory=list)
    rescan: Any = None  # the Report of a rescan of the output
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.all_problems()

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        for c in self.checks:
            out += [f"site {c.patch.name}: {p}" for p in c.problems()]
        return out

    @property
    def negative_inputs(self) -> int:
        return sum(c.negative_inputs for c in self.checks)

    @property
    def leaking(self) -> int:
        return sum(c.leaking for c in self.checks)


def new_checks(plan: PatchPlan) -> dict[int, SiteCheck]:
    return {p.index: SiteCheck(p) for p in plan.sites}


def max_abs_change(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest |a - b| over all float outputs (NaN in both counts as equal)."""
    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        if x.dtype.kind != "f" or not x.size:
            continue
        diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
        diff[np.isnan(x) & np.isnan(y)] = 0.0
        if np.isnan(diff).any():
            return float("inf")
        worst = max(worst, float(diff.max()))
    return worst


def pair_change(original: Iterator[list[np.ndarray]], patched: Iterator[list[np.ndarray]]) -> float:
    """max |change| over two models' outputs on the same batches."""
    return max((max_abs_change(a, b) for a, b in zip(original, patched, strict=True)), default=0.0)


def check_rescan(verification: Verification, plan: PatchPlan) -> None:
    """The rescan of the output lists the same sites, the patched ones leaky now."""
    report = verification.rescan
    if len(report.sites) != len(plan.site_names):
        verification.problems.append(f"a rescan of the output finds {len(report.sites)} sites, "
                                     f"the original has {len(plan.site_names)}")
        return
    for check in verification.checks:
        site = report.sites[check.patch.index]
        check.new_name, check.new_kind = site.name, site.kind
        if site.grad_blocked:
            check.notes.append(f"a rescan still sees a {site.kind} (grad-blocked) site there")


class PairTimer:
    """(prune's check; patch times the runs of its scans instead, verify_pass.py.)

    Seconds per batch of the original and the pruned model, timed on the check's own runs:
    both models run every batch of the sample anyway, so timing those runs costs nothing (a
    separate timing loop of 4 batches x 6 rounds x 2 models cost ResNet-18 about six times a
    scan).

    Each model's first run is a warm-up (allocations, kernel choice) and is not counted; only
    batches of the first batch's size count. The fastest run is the figure: other work on
    the machine only ever adds time, and it hits both models alike when their runs
    alternate. A sample too small for TIMING_RUNS counted runs is topped up (`top_up`).
    """

    def __init__(self, sync: Callable[[], None] = lambda: None) -> None:
        self.sync = sync
        self.rows = 0  # rows per timed batch (the first batch's)
        self.best = [float("inf"), float("inf")]
        self.runs = [-1, -1]  # counted runs per model (-1: the warm-up is still to come)

    def run(self, which: int, fn: Callable[[], Any], rows: int) -> Any:
        """Run `fn` (model `which`: 0 original, 1 patched) on a batch of `rows` rows, timed."""
        if not self.rows:
            self.rows = rows
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - start
        if rows == self.rows:
            if self.runs[which] >= 0:
                self.best[which] = min(self.best[which], seconds)
            self.runs[which] += 1
        return out

    def top_up(self, original: Callable[[], Any], patched: Callable[[], Any]) -> None:
        """Interleaved runs on one batch of the timed size, until each model has TIMING_RUNS."""
        while self.rows and min(self.runs) < TIMING_RUNS:
            self.run(0, original, self.rows)
            self.run(1, patched, self.rows)

    def seconds(self) -> tuple[float, float]:
        if min(self.runs) < 1:
            return 0.0, 0.0
        return self.best[0], self.best[1]
