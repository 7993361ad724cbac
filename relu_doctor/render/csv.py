"""CSV: one row per site, the JSON keys as columns (lists joined by spaces)."""

from __future__ import annotations

import csv
import io
import json

from ..report import Report

COLUMNS = ["index", "name", "kind", "op", "params", "shape", "axis", "neurons", "grad_blocked", "dead",
           "dead_ratio", "dead_indices", "always_on", "saturated", "dormant", "rarely_active", "sparsity",
           "nonfinite", "mean", "max"]


def _cell(value: object) -> object:
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else ""
    return "" if value is None else value


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for site in report.sites:
        d = site.to_dict(with_counters=False)
        writer.writerow([_cell(d[c]) for c in COLUMNS])
    return out.getvalue()
