"""The one check of a JSON report read from a file (`diff`, `merge`, `patch --report`, `scan
--baseline`): types, ranges and consistency, so `Report.from_dict` never meets a value it
would misread. A report that fails is refused with one line saying where and what.

What "consistent" means is written down once, in `_check_counters` and `_check_derived`:
per-neuron counts within the rows seen, counts that are counts (integers from 0 to 2**53),
sums that are finite, derived metrics (dead, dead_indices, summary) equal to what the
counters give. A report that passes merges into a report that passes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import UserError
from .kinds import KINDS
from .kinds import upper_bound as kind_upper_bound
from .stats import COUNTERS, DEFAULT_TAU, SiteCounters, model_metrics, site_metrics

SCHEMA = "relu-doctor/report/v1"
MAX_REPORT_BYTES = 1 << 30  # 1 GiB of JSON: about 50 million neurons' counters
MAX_COUNT = 2**53  # counts above this are not exact in the float64 metrics
MAX_NEURONS = 1 << 26  # per site
NEURON_AXES = ("auto", "channel", "last")
# The parameters of the kinds patch rewrites (the kinds registry's records); a bound that a
# report invents or drops would change what patch writes.
_PARAMS: dict[str, set[str]] = {name: set(k.params) for name, k in KINDS.items() if k.leaks_when_patched}
_SHARD = re.compile(r"^(\d{1,9})/(\d{1,9})$")
_HINT = "Pass a report written by `relu-doctor scan --format json` (or merge), unedited."


class _Invalid(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def _fail(where: str, problem: str) -> NoReturn:
    raise _Invalid(where, problem)


def load_report_dict(path: str | Path) -> dict[str, Any]:
    """Read the JSON report at `path` and check it; a UserError (exit 2) for anything else."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"report not found: {path}" if not path.exists() else f"{path} is not a regular file",
                            _HINT)
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise UserError(f"{path} is {size / 2**30:.1f} GiB, larger than any report relu-doctor writes "
                            f"({MAX_REPORT_BYTES >> 30} GiB at most)", _HINT)
        text = path.read_bytes().decode("utf-8")
    except UserError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read report {path}: {e}", _HINT) from None
    return check_report(parse_json(text, str(path)), str(path))


def parse_json(text: str, label: str) -> Any:
    """Strict JSON: no NaN / Infinity literals, no number that overflows to inf, and no
    nesting deep enough to exhaust the parser (a RecursionError is a refusal, not a crash)."""
    def constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not a number JSON allows")

    def finite_float(s: str) -> float:
        x = float(s)
        if not math.isfinite(x):
            raise ValueError(f"number {s[:20]} is out of range")
        return x

    try:
        return json.loads(text, parse_constant=constant, parse_float=finite_float)
    except RecursionError:
        raise UserError(f"{label} is not a relu-doctor report: JSON nested too deeply", _HINT) from None
    except ValueError as e:  # JSONDecodeError, the above, or an integer of thousands of digits
        raise UserError(f"{label} is not a relu-doctor report: not valid JSON ({str(e)[:200]})", _HINT) from None


def check_report(d: Any, label: str = "the report") -> dict[str, Any]:
    """`d` unchanged if it is a consistent v1 report, else a UserError naming the first problem."""
    try:
        _check(d)
    except _Invalid as e:
        raise UserError(f"{label} is not a relu-doctor report: {e}", _HINT) from None
    except RecursionError:
        raise UserError(f"{label} is not a relu-doctor report: JSON nested too deeply", _HINT) from None
    except (TypeError, ValueError, KeyError, OverflowError) as e:  # a shape no rule above foresaw
        raise UserError(f"{label} is not a relu-doctor report: {type(e).__name__}: {str(e)[:200]}", _HINT) from None
    return d


# ---- the parts -------------------------------------------------------------------------


def _check(d: Any) -> None:
    obj = _dict(d, "the file")
    if obj.get("schema") != SCHEMA:
        _fail("schema", f"{_short(obj.get('schema'))}, not {SCHEMA!r}")
    model = _dict(obj.get("model"), "model")
    _opt(model, "path", _str, "model")
    _str(model.get("format"), "model.format")
    sha = model.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        _fail("model.sha256", "not a sha256 hex digest")
    samples = _check_sample(_dict(obj.get("sample"), "sample"))
    tau = _check_settings(_dict(obj.get("settings"), "settings"))
    sites = _list(obj.get("sites"), "sites")
    names: set[str] = set()
    counters = []
    for i, s in enumerate(sites):
        counters.append(_check_site(_dict(s, f"sites[{i}]"), i, tau, names))
    _check_summary(obj.get("summary"), counters, samples)
    _check_gates(_dict(obj.get("gates", {}), "gates"))
    warnings = _list(obj.get("warnings", []), "warnings")
    for i, w in enumerate(warnings):
        _str(w, f"warnings[{i}]")
    codes = obj.get("warning_codes")
    if codes is not None:
        if len(_list(codes, "warning_codes")) != len(warnings):
            _fail("warning_codes", "not one code per warning")
        for i, c in enumerate(codes):
            _str(c, f"warning_codes[{i}]")


def _check_sample(sample: dict[str, Any]) -> int:
    _str(sample.get("source"), "sample.source")
    samples = _count(sample.get("samples"), "sample.samples")
    batch = sample.get("batch_size")
    if batch is not None and _count(batch, "sample.batch_size") < 1:
        _fail("sample.batch_size", "must be at least 1")
    _opt(sample, "seed", _int, "sample")
    for i, spec in enumerate(_list(sample.get("inputs", []), "sample.inputs")):
        spec = _dict(spec, f"sample.inputs[{i}]")
        _str(spec.get("name"), f"sample.inputs[{i}].name")
        _str(spec.get("dtype"), f"sample.inputs[{i}].dtype")
        for j, dim in enumerate(_list(spec.get("shape"), f"sample.inputs[{i}].shape")):
            _count(dim, f"sample.inputs[{i}].shape[{j}]")
    if sample.get("shard") is not None:
        m = _SHARD.match(str(sample["shard"])) if isinstance(sample["shard"], str) else None
        if not m or not int(m[1]) < int(m[2]):
            _fail("sample.shard", f"{_short(sample['shard'])} is not I/N with 0 <= I < N")
    if sample.get("of_samples") is not None and _count(sample["of_samples"], "sample.of_samples") < samples:
        _fail("sample.of_samples", "fewer than the samples of this part")
    return samples


def _check_settings(settings: dict[str, Any]) -> float:
    tau = settings.get("tau", DEFAULT_TAU)
    if not 0 < _number(tau, "settings.tau") < 1:
        _fail("settings.tau", f"{tau} is not between 0 and 1")
    if settings.get("neuron_axis", "auto") not in NEURON_AXES:
        _fail("settings.neuron_axis", f"{_short(settings.get('neuron_axis'))} is not one of {', '.join(NEURON_AXES)}")
    if not isinstance(settings.get("include_smooth", False), bool):
        _fail("settings.include_smooth", "not true or false")
    for key in ("select", "ignore"):
        for i, g in enumerate(_list(settings.get(key, []), f"settings.{key}")):
            _str(g, f"settings.{key}[{i}]")
    return float(tau)


def _check_site(s: dict[str, Any], index: int, tau: float, names: set[str]) -> tuple[SiteCounters, Any, bool]:
    where = f"sites[{index}]"
    if _int(s.get("index"), f"{where}.index") != index:
        _fail(f"{where}.index", f"{s.get('index')} at position {index}: sites are listed in execution order")
    name = _str(s.get("name"), f"{where}.name")
    if name in names:
        _fail(f"{where}.name", f"{_short(name)} appears twice: site names are unique")
    names.add(name)
    kind = s.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        _fail(f"{where}.kind", f"{_short(kind)} is not a known kind")
    _str(s.get("op"), f"{where}.op")
    params = _dict(s.get("params", {}), f"{where}.params")
    for k, v in params.items():
        _number(v, f"{where}.params.{k}")
    if kind in _PARAMS and set(params) != _PARAMS[kind]:
        _fail(f"{where}.params", f"a {kind} site has parameters {sorted(_PARAMS[kind]) or 'none'}, "
                                 f"not {sorted(params)}")
    bounded = KINDS[kind].bounded
    upper = kind_upper_bound(kind, params)
    if bounded and not (upper is not None and upper > 0):
        _fail(f"{where}.params", f"a {kind} needs a positive upper bound (params.max)")
    shape = [_count(v, f"{where}.shape[{j}]") for j, v in enumerate(_list(s.get("shape"), f"{where}.shape"))]
    axis = _count(s.get("axis"), f"{where}.axis")
    if axis > max(len(shape), 1):
        _fail(f"{where}.axis", f"{axis} is beyond the output's {len(shape) + 1} axes")
    c = _check_counters(_dict(s.get("counters"), f"{where}.counters"), f"{where}.counters",
                        bounded=bounded, nonnegative=KINDS[kind].nonnegative)
    if 1 <= axis <= len(shape) and shape[axis - 1] != c.neurons:
        _fail(f"{where}.shape", f"{shape[axis - 1]} along axis {axis}, but the counters have {c.neurons} neurons")
    metrics = site_metrics(c, upper, tau)
    _check_derived(s, metrics, where)
    if any(k in s for k in ("provably_dead", "provably_dead_indices", "proof")):
        _check_proof(s, c.neurons, where)
    if any(k in s for k in ("provably_saturated", "provably_saturated_indices")):
        _check_saturated(s, c.neurons, bounded, where)
    return c, metrics, KINDS[kind].grad_blocked


def _check_counters(d: dict[str, Any], where: str, bounded: bool, nonnegative: bool) -> SiteCounters:
    fires = _list(d.get("fires"), f"{where}.fires")
    n = len(fires)
    if n > MAX_NEURONS:
        _fail(f"{where}.fires", f"{n} neurons, more than {MAX_NEURONS}")
    values: dict[str, Any] = {}
    for f in COUNTERS:
        v, at = d.get(f.name), f"{where}.{f.name}"
        if f.bounded_only and not bounded:
            if v is not None:
                _fail(at, "only kinds with an upper bound keep a per-neuron minimum (null here)")
            values[f.name] = None
            continue
        if f.on_request and v is None:  # not measured (a scan without neuron_extremes)
            if f.name in d:
                _fail(at, "null: leave the key out when it was not measured")
            values[f.name] = None
            continue
        extreme = f.merge != "sum"  # an extreme of nothing (or +-inf) is written as null
        if f.per_neuron:
            items = _list(v, at)
            if len(items) != n:
                _fail(at, f"{len(items)} values for {n} neurons")
            values[f.name] = _counts(items, at) if f.is_count else _numbers(items, at, f.identity if extreme else None)
        elif f.is_count:
            values[f.name] = _count(v, at)
        else:
            values[f.name] = f.identity if v is None and extreme else _number(v, at)
    c = SiteCounters.of(n, values)
    if c.samples > c.rows or (c.samples == 0) != (c.rows == 0) or (c.samples and c.rows % c.samples):
        _fail(f"{where}.rows", f"{c.rows} rows for {c.samples} samples: rows are samples x positions")
    if c.nonfinite > c.rows * n:
        _fail(f"{where}.nonfinite", f"{c.nonfinite} is more than the {c.rows * n} entries")
    _at_most(c.fires, c.rows, f"{where}.fires", "rows")
    _at_most(c.sample_fires, c.samples, f"{where}.sample_fires", "samples")
    _at_most(c.sample_fires, c.fires, f"{where}.sample_fires", "fires of the same neuron")
    if np.any((c.fires > 0) & (c.sample_fires == 0)):
        _fail(f"{where}.sample_fires", "0 for a neuron that fired")
    if np.any(c.abs_sum < 0):
        _fail(f"{where}.abs_sum", "a negative sum of absolute values")
    if abs(c.total) > float(c.abs_sum.sum()) * (1 + 1e-6) + 1e-6:
        _fail(f"{where}.total", "larger than the sum of absolute values")
    if nonnegative and np.any((c.fires == 0) & (c.abs_sum > 0)) and c.nonfinite == 0:
        _fail(f"{where}.abs_sum", "non-zero for a neuron of a non-negative kind that never fired")
    if d.get("max") is not None:  # null: no entry, or an infinite one
        if np.any(c.fires > 0) and c.max <= 0:
            _fail(f"{where}.max", f"{c.max} while some neuron fired (> 0)")
        if c.min is not None and np.any(c.min > c.max):
            _fail(f"{where}.min", "above the site's maximum")
    _check_extremes(c, where, nonnegative)
    return c


def _check_extremes(c: SiteCounters, where: str, nonnegative: bool) -> None:
    """The per-neuron max and min (when measured) must agree with the counts and the site's
    extremes. A null (read as -inf for a max, +inf for a min) is no value or an infinite
    one, so only finite values are held to the rules."""
    if (c.neuron_max is None) != (c.neuron_min is None):
        _fail(f"{where}.neuron_max", "neuron_max and neuron_min are measured together: give both or neither")
    if c.neuron_max is None or c.neuron_min is None or c.rows == 0:
        return
    top, low = c.neuron_max, c.neuron_min
    has_top, has_low = np.isfinite(top), np.isfinite(low)
    if np.any(has_top & (c.fires == 0) & (top > 0)):
        _fail(f"{where}.neuron_max", "positive for a neuron that never fired")
    if np.any(has_top & (c.fires > 0) & (top <= 0)):
        _fail(f"{where}.neuron_max", "not positive for a neuron that fired")
    if np.any(has_low & (c.fires == c.rows) & (low <= 0)):
        _fail(f"{where}.neuron_min", "not positive for a neuron positive on every entry")
    if np.any(has_low & has_top & (low > top)):
        _fail(f"{where}.neuron_min", "above the same neuron's neuron_max")
    if nonnegative and np.any(has_low & (low < 0)):
        _fail(f"{where}.neuron_min", "negative for a kind whose outputs are >= 0")
    if c.min is not None and not np.array_equal(np.where(has_low, low, 0), np.where(has_low, c.min, 0)):
        _fail(f"{where}.neuron_min", "differs from the same neuron's min")
    if np.isfinite(c.max) and top.max(initial=-np.inf) != c.max:
        _fail(f"{where}.neuron_max", f"its largest value is not the site's max ({c.max})")


def _check_derived(s: dict[str, Any], m: Any, where: str) -> None:
    """The metrics written beside the counters must be the counters' metrics."""
    for key in ("neurons", "dead", "always_on", "saturated", "dormant", "rarely_active", "nonfinite"):
        if key in s and not (_is_int(s[key]) and s[key] == getattr(m, key)):
            _fail(f"{where}.{key}", f"{_short(s[key])}, but the counters give {getattr(m, key)}")
    if "dead_indices" in s:
        idx = _list(s["dead_indices"], f"{where}.dead_indices")
        if not all(_is_int(i) for i in idx) or idx != m.dead_indices:
            _fail(f"{where}.dead_indices", "not the sorted, unique indices of the neurons whose fires are 0")
    for key in ("dead_ratio", "sparsity"):
        if key in s and not math.isclose(_number(s[key], f"{where}.{key}"), getattr(m, key), rel_tol=1e-9,
                                         abs_tol=1e-12):
            _fail(f"{where}.{key}", f"{s[key]}, but the counters give {getattr(m, key)}")


def _check_proof(s: dict[str, Any], neurons: int, where: str) -> None:
    """`scan --prove`'s keys: sorted, unique neuron indices, one rule each (prune and revive act on them)."""
    idx = _indices(s.get("provably_dead_indices"), neurons, f"{where}.provably_dead_indices")
    rules = _list(s.get("proof", []), f"{where}.proof")
    if len(rules) != len(idx) or not all(isinstance(r, str) for r in rules):
        _fail(f"{where}.proof", "not one rule (a string) per provably dead neuron")
    _check_count(s, "provably_dead", len(idx), where)


def _check_saturated(s: dict[str, Any], neurons: int, bounded: bool, where: str) -> None:
    """`scan --prove`'s neurons of a relu6 / clip stuck at the upper bound on every input."""
    at = f"{where}.provably_saturated_indices"
    if not bounded:
        _fail(at, "only kinds with an upper bound (relu6, clip) have neurons stuck at it")
    if "provably_dead_indices" not in s:
        _fail(at, "written only beside provably_dead_indices (by scan --prove)")
    idx = _indices(s.get("provably_saturated_indices"), neurons, at)
    if set(idx) & set(s["provably_dead_indices"]):
        _fail(at, "a neuron cannot be stuck at 0 and at the upper bound: it is also in provably_dead_indices")
    _check_count(s, "provably_saturated", len(idx), where)


def _indices(v: Any, neurons: int, where: str) -> list[Any]:
    idx = _list(v, where)
    if not all(_is_int(i) for i in idx) or any(not 0 <= i < neurons for i in idx) or \
            any(a >= b for a, b in zip(idx, idx[1:])):
        _fail(where, f"not sorted, unique neuron indices below {neurons}")
    return idx


def _check_count(s: dict[str, Any], key: str, listed: int, where: str) -> None:
    """A count written beside its indices (optional) must be their number."""
    if key in s and not (_is_int(s[key]) and s[key] == listed):
        _fail(f"{where}.{key}", f"{_short(s[key])}, but {listed} indices are listed")


def _check_summary(summary: Any, sites: list[tuple[SiteCounters, Any, bool]], samples: int) -> None:
    if summary is None:
        return
    summary = _dict(summary, "summary")
    m = model_metrics(sites, samples)
    for key in ("sites", "neurons", "dead", "dormant", "grad_blocked_neurons", "dead_all"):
        if key in summary and not (_is_int(summary[key]) and summary[key] == getattr(m, key)):
            _fail(f"summary.{key}", f"{_short(summary[key])}, but the sites give {getattr(m, key)}")
    for key in ("dead_ratio", "sparsity"):
        if key in summary and not math.isclose(_number(summary[key], f"summary.{key}"), getattr(m, key),
                                               rel_tol=1e-9, abs_tol=1e-12):
            _fail(f"summary.{key}", f"{summary[key]}, but the sites give {getattr(m, key)}")


def _check_gates(gates: dict[str, Any]) -> None:
    if not isinstance(gates.get("passed", True), bool):
        _fail("gates.passed", "not true or false")
    for k, v in _dict(gates.get("checked", {}), "gates.checked").items():
        if not 0 <= _number(v, f"gates.checked.{k}") <= 1:
            _fail(f"gates.checked.{k}", f"{v} is not a ratio between 0 and 1")
    for i, v in enumerate(_list(gates.get("violations", []), "gates.violations")):
        v = _dict(v, f"gates.violations[{i}]")
        if set(v) - {"gate", "threshold", "value", "site"}:
            _fail(f"gates.violations[{i}]", f"unknown keys {sorted(set(v) - {'gate', 'threshold', 'value', 'site'})}")
        _str(v.get("gate"), f"gates.violations[{i}].gate")
        _number(v.get("threshold"), f"gates.violations[{i}].threshold")
        _number(v.get("value"), f"gates.violations[{i}].value")
        _opt(v, "site", _str, f"gates.violations[{i}]")


# ---- values ----------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any, where: str) -> int:
    if not _is_int(v) or abs(v) > MAX_COUNT:
        _fail(where, f"{_short(v)} is not an integer")
    return int(v)


def _count(v: Any, where: str) -> int:
    if not _is_int(v) or not 0 <= v <= MAX_COUNT:
        _fail(where, f"{_short(v)} is not a count (an integer from 0 to 2**53)")
    return int(v)


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1e300:
        _fail(where, f"{_short(v)} is not a finite number")
    return float(v)


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        _fail(where, f"{_short(v)} is not a string")
    return v


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        _fail(where, f"a {type(v).__name__}, not an object")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        _fail(where, f"a {type(v).__name__}, not a list")
    return v


def _counts(items: list[Any], where: str) -> np.ndarray:
    """A list of counts as int64; the builtins' fast path first (reports hold millions)."""
    if all(type(x) is int for x in items) and (not items or (min(items) >= 0 and max(items) <= MAX_COUNT)):
        return np.array(items, np.int64)
    return np.array([_count(x, f"{where}[{i}]") for i, x in enumerate(items)], np.int64)


def _numbers(items: list[Any], where: str, null: float | None) -> np.ndarray:
    """A list of finite numbers as float64; `null` (when not None) stands for a JSON null."""
    if all(type(x) in (int, float) for x in items):
        a = np.array(items, np.float64)
        if np.isfinite(a).all() and (not a.size or np.abs(a).max() <= 1e300):
            return a
    return np.array([null if x is None and null is not None else _number(x, f"{where}[{i}]")
                     for i, x in enumerate(items)], np.float64)


def _opt(d: dict[str, Any], key: str, check: Callable[[Any, str], Any], where: str) -> None:
    if d.get(key) is not None:
        check(d[key], f"{where}.{key}")


def _at_most(a: np.ndarray, bound: np.ndarray | int, where: str, what: str) -> None:
    over = np.flatnonzero(a > bound)
    if over.size:
        i = int(over[0])
        limit = bound if isinstance(bound, int) else int(bound[i])
        _fail(f"{where}[{i}]", f"{int(a[i])} is more than its {limit} {what}")


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."
