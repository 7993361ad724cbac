"""The checks of one site of a report read from a file: its identity (index, unique name,
kind and the kind's parameters), its shape, and its counters, consistent with each other
and with the metrics written beside them.

What "consistent" means is written down here once, in `_check_counters` and
`_check_derived`: per-neuron counts within the rows seen, counts that are counts
(integers from 0 to 2**53), sums that are finite, derived metrics (dead, dead_indices)
equal to what the counters give.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kinds import KINDS
from .kinds import upper_bound as kind_upper_bound
from .stats import COUNTERS, SiteCounters, site_metrics
from .validate_values import (
    as_count,
    as_counts,
    as_dict,
    as_int,
    as_list,
    as_number,
    as_numbers,
    as_str,
    at_most,
    check_derived,
    fail,
    is_int,
    short,
)

MAX_NEURONS = 1 << 26  # per site
# The parameters of the kinds patch rewrites (the kinds registry's records); a bound that a
# report invents or drops would change what patch writes.
_PARAMS: dict[str, set[str]] = {name: set(k.params) for name, k in KINDS.items() if k.leaks_when_patched}


def check_site(s: dict[str, Any], index: int, tau: float, names: set[str]) -> tuple[SiteCounters, Any, bool]:
    where = f"sites[{index}]"
    if as_int(s.get("index"), f"{where}.index") != index:
        fail(f"{where}.index", f"{s.get('index')} at position {index}: sites are listed in execution order")
    name = as_str(s.get("name"), f"{where}.name")
    if name in names:
        fail(f"{where}.name", f"{short(name)} appears twice: site names are unique")
    names.add(name)
    kind = s.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        fail(f"{where}.kind", f"{short(kind)} is not a known kind")
    as_str(s.get("op"), f"{where}.op")
    params = as_dict(s.get("params", {}), f"{where}.params")
    for k, v in params.items():
        as_number(v, f"{where}.params.{k}")
    if kind in _PARAMS and set(params) != _PARAMS[kind]:
        fail(f"{where}.params", f"a {kind} site has parameters {sorted(_PARAMS[kind]) or 'none'}, "
                                 f"not {sorted(params)}")
    bounded = KINDS[kind].bounded
    upper = kind_upper_bound(kind, params)
    if bounded and not (upper is not None and upper > 0):
        fail(f"{where}.params", f"a {kind} needs a positive upper bound (params.max)")
    shape = [as_count(v, f"{where}.shape[{j}]") for j, v in enumerate(as_list(s.get("shape"), f"{where}.shape"))]
    axis = as_count(s.get("axis"), f"{where}.axis")
    if axis > max(len(shape), 1):
        fail(f"{where}.axis", f"{axis} is beyond the output's {len(shape) + 1} axes")
    c = _check_counters(as_dict(s.get("counters"), f"{where}.counters"), f"{where}.counters",
                        bounded=bounded, nonnegative=KINDS[kind].nonnegative)
    if 1 <= axis <= len(shape) and shape[axis - 1] != c.neurons:
        fail(f"{where}.shape", f"{shape[axis - 1]} along axis {axis}, but the counters have {c.neurons} neurons")
    metrics = site_metrics(c, upper, tau)
    _check_derived(s, metrics, where)
    if any(k in s for k in ("provably_dead", "provably_dead_indices", "proof")):
        _check_proof(s, c.neurons, where)
    if any(k in s for k in ("provably_saturated", "provably_saturated_indices")):
        _check_saturated(s, c.neurons, bounded, where)
    return c, metrics, KINDS[kind].grad_blocked


def _check_counters(d: dict[str, Any], where: str, bounded: bool, nonnegative: bool) -> SiteCounters:
    fires = as_list(d.get("fires"), f"{where}.fires")
    n = len(fires)
    if n > MAX_NEURONS:
        fail(f"{where}.fires", f"{n} neurons, more than {MAX_NEURONS}")
    values: dict[str, Any] = {}
    for f in COUNTERS:
        v, at = d.get(f.name), f"{where}.{f.name}"
        if f.bounded_only and not bounded:
            if v is not None:
                fail(at, "only kinds with an upper bound keep a per-neuron minimum (null here)")
            values[f.name] = None
            continue
        if f.on_request and v is None:  # not measured (a scan without neuron_extremes)
            if f.name in d:
                fail(at, "null: leave the key out when it was not measured")
            values[f.name] = None
            continue
        extreme = f.merge != "sum"  # an extreme of nothing (or +-inf) is written as null
        if f.per_neuron:
            items = as_list(v, at)
            if len(items) != n:
                fail(at, f"{len(items)} values for {n} neurons")
            values[f.name] = (as_counts(items, at) if f.is_count
                              else as_numbers(items, at, f.identity if extreme else None))
        elif f.is_count:
            values[f.name] = as_count(v, at)
        else:
            values[f.name] = f.identity if v is None and extreme else as_number(v, at)
    c = SiteCounters.of(n, values)
    if c.samples > c.rows or (c.samples == 0) != (c.rows == 0) or (c.samples and c.rows % c.samples):
        fail(f"{where}.rows", f"{c.rows} rows for {c.samples} samples: rows are samples x positions")
    if c.nonfinite > c.rows * n:
        fail(f"{where}.nonfinite", f"{c.nonfinite} is more than the {c.rows * n} entries")
    at_most(c.fires, c.rows, f"{where}.fires", "rows")
    at_most(c.sample_fires, c.samples, f"{where}.sample_fires", "samples")
    at_most(c.sample_fires, c.fires, f"{where}.sample_fires", "fires of the same neuron")
    if np.any((c.fires > 0) & (c.sample_fires == 0)):
        fail(f"{where}.sample_fires", "0 for a neuron that fired")
    if np.any(c.abs_sum < 0):
        fail(f"{where}.abs_sum", "a negative sum of absolute values")
    if abs(c.total) > float(c.abs_sum.sum()) * (1 + 1e-6) + 1e-6:
        fail(f"{where}.total", "larger than the sum of absolute values")
    if nonnegative and np.any((c.fires == 0) & (c.abs_sum > 0)) and c.nonfinite == 0:
        fail(f"{where}.abs_sum", "non-zero for a neuron of a non-negative kind that never fired")
    if d.get("max") is not None:  # null: no entry, or an infinite one
        if np.any(c.fires > 0) and c.max <= 0:
            fail(f"{where}.max", f"{c.max} while some neuron fired (> 0)")
        if c.min is not None and np.any(c.min > c.max):
            fail(f"{where}.min", "above the site's maximum")
    _check_extremes(c, where, nonnegative)
    return c


def _check_extremes(c: SiteCounters, where: str, nonnegative: bool) -> None:
    """The per-neuron max and min (when measured) must agree with the counts and the site's
    extremes. A null (read as -inf for a max, +inf for a min) is no value or an infinite
    one, so only finite values are held to the rules."""
    if (c.neuron_max is None) != (c.neuron_min is None):
        fail(f"{where}.neuron_max", "neuron_max and neuron_min are measured together: give both or neither")
    if c.neuron_max is None or c.neuron_min is None or c.rows == 0:
        return
    top, low = c.neuron_max, c.neuron_min
    has_top, has_low = np.isfinite(top), np.isfinite(low)
    if np.any(has_top & (c.fires == 0) & (top > 0)):
        fail(f"{where}.neuron_max", "positive for a neuron that never fired")
    if np.any(has_top & (c.fires > 0) & (top <= 0)):
        fail(f"{where}.neuron_max", "not positive for a neuron that fired")
    if np.any(has_low & (c.fires == c.rows) & (low <= 0)):
        fail(f"{where}.neuron_min", "not positive for a neuron positive on every entry")
    if np.any(has_low & has_top & (low > top)):
        fail(f"{where}.neuron_min", "above the same neuron's neuron_max")
    if nonnegative and np.any(has_low & (low < 0)):
        fail(f"{where}.neuron_min", "negative for a kind whose outputs are >= 0")
    if c.min is not None and not np.array_equal(np.where(has_low, low, 0), np.where(has_low, c.min, 0)):
        fail(f"{where}.neuron_min", "differs from the same neuron's min")
    if np.isfinite(c.max) and top.max(initial=-np.inf) != c.max:
        fail(f"{where}.neuron_max", f"its largest value is not the site's max ({c.max})")


def _check_derived(s: dict[str, Any], m: Any, where: str) -> None:
    """The metrics written beside the counters must be the counters' metrics."""
    check_derived(s, m, ("neurons", "dead", "always_on", "saturated", "dormant", "rarely_active", "nonfinite"), where,
                  "the counters")
    if "dead_indices" in s:
        idx = as_list(s["dead_indices"], f"{where}.dead_indices")
        if not all(is_int(i) for i in idx) or idx != m.dead_indices:
            fail(f"{where}.dead_indices", "not the sorted, unique indices of the neurons whose fires are 0")


def _check_proof(s: dict[str, Any], neurons: int, where: str) -> None:
    """`scan --prove`'s keys: sorted, unique neuron indices, one rule each (prune and revive act on them)."""
    idx = _indices(s.get("provably_dead_indices"), neurons, f"{where}.provably_dead_indices")
    rules = as_list(s.get("proof", []), f"{where}.proof")
    if len(rules) != len(idx) or not all(isinstance(r, str) for r in rules):
        fail(f"{where}.proof", "not one rule (a string) per provably dead neuron")
    _check_count(s, "provably_dead", len(idx), where)


def _check_saturated(s: dict[str, Any], neurons: int, bounded: bool, where: str) -> None:
    """`scan --prove`'s neurons of a relu6 / clip stuck at the upper bound on every input."""
    at = f"{where}.provably_saturated_indices"
    if not bounded:
        fail(at, "only kinds with an upper bound (relu6, clip) have neurons stuck at it")
    if "provably_dead_indices" not in s:
        fail(at, "written only beside provably_dead_indices (by scan --prove)")
    idx = _indices(s.get("provably_saturated_indices"), neurons, at)
    if set(idx) & set(s["provably_dead_indices"]):
        fail(at, "a neuron cannot be stuck at 0 and at the upper bound: it is also in provably_dead_indices")
    _check_count(s, "provably_saturated", len(idx), where)


def _indices(v: Any, neurons: int, where: str) -> list[Any]:
    idx = as_list(v, where)
    if not all(is_int(i) for i in idx) or any(not 0 <= i < neurons for i in idx) or \
            any(a >= b for a, b in zip(idx, idx[1:])):
        fail(where, f"not sorted, unique neuron indices below {neurons}")
    return idx


def _check_count(s: dict[str, Any], key: str, listed: int, where: str) -> None:
    """A count written beside its indices (optional) must be their number."""
    if key in s and not (is_int(s[key]) and s[key] == listed):
        fail(f"{where}.{key}", f"{short(s[key])}, but {listed} indices are listed")
