"""The one check of a JSON report read from a file (`diff`, `merge`, `patch --report`, `scan
--baseline`): types, ranges and consistency, so `Report.from_dict` never meets a value it
would misread. A report that fails is refused with one line saying where and what.

This module checks the report's parts (schema, model, sample, settings, summary, gates,
warnings); each site is checked by validate_site.py, single values by validate_values.py.
What "consistent" means for a site is written down once, in validate_site.py; the summary
must equal what the sites give. A report that passes merges into a report that passes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn

from .errors import UserError
from .kinds.axis import NEURON_AXES
from .stats import DEFAULT_TAU, SiteCounters, model_metrics
from .validate_site import check_site
from .validate_values import (
    Invalid,
    as_count,
    as_dict,
    as_int,
    as_list,
    as_number,
    as_str,
    check_derived,
    check_optional,
    fail,
    short,
)

SCHEMA = "relu-doctor/report/v1"
MAX_REPORT_BYTES = 1 << 30  # 1 GiB of JSON: about 50 million neurons' counters
_SHARD = re.compile(r"^(\d{1,9})/(\d{1,9})$")
_HINT = "Pass a report written by `relu-doctor scan --format json` (or merge), unedited."


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
    except Invalid as e:
        raise UserError(f"{label} is not a relu-doctor report: {e}", _HINT) from None
    except RecursionError:
        raise UserError(f"{label} is not a relu-doctor report: JSON nested too deeply", _HINT) from None
    except (TypeError, ValueError, KeyError, OverflowError) as e:  # a shape no rule above foresaw
        raise UserError(f"{label} is not a relu-doctor report: {type(e).__name__}: {str(e)[:200]}", _HINT) from None
    return d


# ---- the parts -------------------------------------------------------------------------


def _check(d: Any) -> None:
    obj = as_dict(d, "the file")
    if obj.get("schema") != SCHEMA:
        fail("schema", f"{short(obj.get('schema'))}, not {SCHEMA!r}")
    model = as_dict(obj.get("model"), "model")
    check_optional(model, "path", as_str, "model")
    as_str(model.get("format"), "model.format")
    sha = model.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        fail("model.sha256", "not a sha256 hex digest")
    samples = _check_sample(as_dict(obj.get("sample"), "sample"))
    tau = _check_settings(as_dict(obj.get("settings"), "settings"))
    sites = as_list(obj.get("sites"), "sites")
    names: set[str] = set()
    counters = []
    for i, s in enumerate(sites):
        counters.append(check_site(as_dict(s, f"sites[{i}]"), i, tau, names))
    _check_summary(obj.get("summary"), counters, samples)
    _check_gates(as_dict(obj.get("gates", {}), "gates"))
    warnings = as_list(obj.get("warnings", []), "warnings")
    for i, w in enumerate(warnings):
        as_str(w, f"warnings[{i}]")
    codes = obj.get("warning_codes")
    if codes is not None:
        if len(as_list(codes, "warning_codes")) != len(warnings):
            fail("warning_codes", "not one code per warning")
        for i, c in enumerate(codes):
            as_str(c, f"warning_codes[{i}]")


def _check_sample(sample: dict[str, Any]) -> int:
    as_str(sample.get("source"), "sample.source")
    samples = as_count(sample.get("samples"), "sample.samples")
    batch = sample.get("batch_size")
    if batch is not None and as_count(batch, "sample.batch_size") < 1:
        fail("sample.batch_size", "must be at least 1")
    check_optional(sample, "seed", as_int, "sample")
    for i, spec in enumerate(as_list(sample.get("inputs", []), "sample.inputs")):
        spec = as_dict(spec, f"sample.inputs[{i}]")
        as_str(spec.get("name"), f"sample.inputs[{i}].name")
        as_str(spec.get("dtype"), f"sample.inputs[{i}].dtype")
        for j, dim in enumerate(as_list(spec.get("shape"), f"sample.inputs[{i}].shape")):
            as_count(dim, f"sample.inputs[{i}].shape[{j}]")
    if sample.get("shard") is not None:
        m = _SHARD.match(str(sample["shard"])) if isinstance(sample["shard"], str) else None
        if not m or not int(m[1]) < int(m[2]):
            fail("sample.shard", f"{short(sample['shard'])} is not I/N with 0 <= I < N")
    if sample.get("of_samples") is not None and as_count(sample["of_samples"], "sample.of_samples") < samples:
        fail("sample.of_samples", "fewer than the samples of this part")
    return samples


def _check_settings(settings: dict[str, Any]) -> float:
    tau = settings.get("tau", DEFAULT_TAU)
    if not 0 < as_number(tau, "settings.tau") < 1:
        fail("settings.tau", f"{tau} is not between 0 and 1")
    if settings.get("neuron_axis", "auto") not in NEURON_AXES:
        fail("settings.neuron_axis", f"{short(settings.get('neuron_axis'))} is not one of {', '.join(NEURON_AXES)}")
    if not isinstance(settings.get("include_smooth", False), bool):
        fail("settings.include_smooth", "not true or false")
    for key in ("select", "ignore"):
        for i, g in enumerate(as_list(settings.get(key, []), f"settings.{key}")):
            as_str(g, f"settings.{key}[{i}]")
    return float(tau)


def _check_summary(summary: Any, sites: list[tuple[SiteCounters, Any, bool]], samples: int) -> None:
    if summary is None:
        return
    summary = as_dict(summary, "summary")
    check_derived(summary, model_metrics(sites, samples),
                  ("sites", "neurons", "dead", "dormant", "grad_blocked_neurons", "dead_all"), "summary", "the sites")


def _check_gates(gates: dict[str, Any]) -> None:
    if not isinstance(gates.get("passed", True), bool):
        fail("gates.passed", "not true or false")
    for k, v in as_dict(gates.get("checked", {}), "gates.checked").items():
        if not 0 <= as_number(v, f"gates.checked.{k}") <= 1:
            fail(f"gates.checked.{k}", f"{v} is not a ratio between 0 and 1")
    for i, v in enumerate(as_list(gates.get("violations", []), "gates.violations")):
        v = as_dict(v, f"gates.violations[{i}]")
        if set(v) - {"gate", "threshold", "value", "site"}:
            fail(f"gates.violations[{i}]", f"unknown keys {sorted(set(v) - {'gate', 'threshold', 'value', 'site'})}")
        as_str(v.get("gate"), f"gates.violations[{i}].gate")
        as_number(v.get("threshold"), f"gates.violations[{i}].threshold")
        as_number(v.get("value"), f"gates.violations[{i}].value")
        check_optional(v, "site", as_str, f"gates.violations[{i}]")
