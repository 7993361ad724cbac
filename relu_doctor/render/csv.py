"""CSV: a header row, then one row per site; the columns are the site's JSON keys.

Cells that are not scalars: lists (`shape`, `dead_indices`) are joined by spaces, `params`
is a JSON object (empty when there are none), booleans are `true`/`false` as in the JSON,
and a missing value (`max` of a site that never ran) is an empty cell. The per-site
`counters` are left out: they are for `merge`, which reads the JSON report.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from .escape import csv_cell

if TYPE_CHECKING:
    from ..report import Report

# The keys of Site.to_dict(with_counters=False); used as the header when there is no site.
COLUMNS = ["index", "name", "kind", "op", "params", "shape", "axis", "neurons", "grad_blocked", "dead",
           "dead_ratio", "dead_indices", "always_on", "saturated", "dormant", "rarely_active", "sparsity",
           "nonfinite", "mean", "max", "sample_axis"]


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return csv_cell(" ".join(map(str, value)))
    if isinstance(value, dict):
        return csv_cell(json.dumps(value, sort_keys=True)) if value else ""
    return "" if value is None else csv_cell(value)


def render_csv(report: Report) -> str:
    rows = [site.to_dict(with_counters=False) for site in report.sites]
    # Keys added to the report later (v1 only adds) become columns without a change here.
    columns = list(rows[0]) if rows else COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for d in rows:
        writer.writerow([_cell(d[c]) for c in columns])
    return out.getvalue()
