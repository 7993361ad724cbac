"""Markdown for PR comments and $GITHUB_STEP_SUMMARY: worst sites first, all of them folded."""

from __future__ import annotations

from ..report import Report, Site
from .text import percent

TOP = 10


def _row(s: Site) -> str:
    kind = s.kind if s.grad_blocked else f"{s.kind} (leaky)"
    return (f"| {s.index} | `{s.name}` | {kind} | {s.neurons} | {s.dead} | {percent(s.dead_ratio)} | "
            f"{percent(s.sparsity)} | {s.dormant} |")


_HEADER = "| # | site | kind | neurons | dead | dead % | sparsity | dormant |\n|---:|---|---|---:|---:|---:|---:|---:|"


def render_markdown(report: Report) -> str:
    s = report.summary
    status = "✅ passed" if report.gates.passed else "❌ failed"
    lines = [
        f"### relu-doctor: {s.dead} dead of {s.grad_blocked_neurons} ReLU neurons ({percent(s.dead_ratio)})",
        "",
        f"Model `{report.model.get('path')}` ({report.model.get('format')}), {report.sample['samples']} inputs "
        f"({report.sample['source']}), {s.sites} sites, sparsity {percent(s.sparsity)}, dormant {s.dormant}. "
        f"Detection floor {percent(s.detection_floor)}. Gates: {status if report.gates.checked else 'none set'}.",
        "",
    ]
    for v in report.gates.violations:
        lines.append(f"- ❌ {v.describe()}")
    if report.gates.violations:
        lines.append("")
    if not report.sites:
        lines.append("No ReLU-family activation ran in this model.")
        return "\n".join(lines) + "\n"
    worst = sorted(report.sites, key=lambda x: (-x.grad_blocked, -x.dead_ratio, x.index))[:TOP]
    if len(report.sites) > TOP:
        lines += [f"**Worst {TOP} sites**", "", _HEADER, *map(_row, worst), "",
                  f"<details><summary>All {len(report.sites)} sites</summary>", "", _HEADER,
                  *map(_row, report.sites), "", "</details>"]
    else:
        lines += [_HEADER, *map(_row, report.sites)]
    return "\n".join(lines) + "\n"
