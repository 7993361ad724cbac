"""Markdown for PR comments and $GITHUB_STEP_SUMMARY: worst sites first, all of them folded.

GitHub-flavoured: pipes in cells are escaped, site names are code spans, and the full
list sits in a collapsed <details> so a big model's summary stays one screen long.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .escape import md_code, md_text
from .mermaid import mermaid_dead_chart
from .text import percent, proof_line

if TYPE_CHECKING:
    from ..report import Report, Site

TOP = 10  # sites listed in the open before the folded full list
MAX_ROWS = 500  # a huge model's summary stays well under GitHub's 1 MiB step-summary limit


def code(text: object) -> str:
    """`text` as an inline code span that is safe in a table cell (escape.md_code)."""
    return md_code(text)


def _row(s: Site) -> str:
    kind = md_text(s.kind) if s.grad_blocked else f"{md_text(s.kind)} (leaky)"
    return (f"| {s.index} | {code(s.name)} | {kind} | {s.neurons} | {s.dead} | {percent(s.dead_ratio)} | "
            f"{percent(s.sparsity)} | {s.dormant} |")


_HEADER = "| # | site | kind | neurons | dead | dead % | sparsity | dormant |\n|---:|---|---|---:|---:|---:|---:|---:|"


def _table(sites: list[Site]) -> list[str]:
    rows = [_row(s) for s in sites[:MAX_ROWS]]
    more = ["", f"… {len(sites) - MAX_ROWS} more sites: see the JSON report."] if len(sites) > MAX_ROWS else []
    return [_HEADER, *rows, *more]


def render_markdown(report: Report, heading: str = "###") -> str:
    s = report.summary
    status = "✅ passed" if report.gates.passed else "❌ failed"
    path = report.model.path
    lines = [
        (f"{heading} relu-doctor: {s.dead} dead of {s.grad_blocked_neurons} ReLU neurons ({percent(s.dead_ratio)})"
         if s.grad_blocked_neurons or not report.sites else
         f"{heading} relu-doctor: no ReLU-type site ({s.sites} sites of leaky kinds, {s.dead_all} dead neurons)"),
        "",
        f"Model {code(path) + ' (' + md_text(report.model.format) + ')' if path else md_text(report.model.label)}, "
        f"{report.sample['samples']} inputs ({md_text(report.sample['source'])}), {s.sites} sites, "
        f"sparsity {percent(s.sparsity)}, dormant {s.dormant}. Detection floor {percent(s.detection_floor)}. "
        f"Gates: {status if report.gates.checked else 'none set'}.",
        "",
    ]
    proven = proof_line(report)
    if proven:
        lines += [f"Provably dead (no data needed): {proven}", ""]
    failed = [f"- ❌ {md_text(v.describe())}" for v in report.gates.violations]
    lines += failed + ([""] if failed else [])
    if not report.sites:
        lines.append("No ReLU-family activation ran in this model.")
        return "\n".join(lines) + "\n"
    lines += [*mermaid_dead_chart(report.sites), ""]
    if len(report.sites) <= TOP:
        lines += _table(report.sites)
        return "\n".join(lines) + "\n"
    worst = report.worst_sites()
    if worst:
        shown = f"worst {TOP} of {len(worst)}" if len(worst) > TOP else f"{len(worst)}"
        lines += [f"**Sites with dead neurons** ({shown}, highest dead ratio first)", "", *_table(worst[:TOP]), ""]
    else:
        lines += ["No dead neurons in ReLU-type sites.", ""]
    lines += [f"<details><summary>All {len(report.sites)} sites</summary>", "", *_table(report.sites), "",
              "</details>"]
    return "\n".join(lines) + "\n"
