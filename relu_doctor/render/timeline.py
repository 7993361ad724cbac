"""Timeline output: a Rich table, Markdown and CSV. Timeline in, text out; nothing computed here."""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from ..analysis.timeline import Timeline, TimelineSite
from .markdown import code
from .text import percent

TABLE_POINTS = 6  # point columns that fit an 80-column terminal beside the site's own
MAX_LISTED = 12  # neuron indices listed per step before "..."


def shown_points(timeline: Timeline, limit: int = TABLE_POINTS) -> list[int]:
    """Indices of the points given a column: all of them, or evenly spread with the first and last."""
    n = len(timeline.points)
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _ratio(value: float | None) -> str:
    return "-" if value is None else percent(value)


def deaths_by_step(site: TimelineSite) -> dict[int, list[int]]:
    by_step: dict[int, list[int]] = defaultdict(list)
    for neuron, step in sorted(site.died_at.items()):
        by_step[step].append(neuron)
    return dict(sorted(by_step.items()))


def _neurons(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:MAX_LISTED]))
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > MAX_LISTED else "")


def death_lines(timeline: Timeline) -> list[str]:
    """Plain sentences: which neurons of which site died at which step, and which revived."""
    lines = []
    for s in timeline.sites:
        for step, neurons in deaths_by_step(s).items():
            lines.append(f"{s.name}: neuron(s) {_neurons(neurons)} dead from step {step}")
        if s.revived:
            lines.append(f"{s.name}: neuron(s) {_neurons(sorted(s.revived))} revived after being dead")
    return lines


def render_timeline_table(timeline: Timeline, console: Console) -> None:
    cols = shown_points(timeline)
    table = Table(title=f"dead % per site at each point ({timeline.source})", title_justify="left")
    table.add_column("site", overflow="fold", max_width=24)
    table.add_column("kind")
    table.add_column("neurons", justify="right")
    for i in cols:
        table.add_column(str(timeline.points[i].step), justify="right")
    for s in timeline.sites:
        kind = s.kind if s.grad_blocked else f"{s.kind}*"
        table.add_row(s.name, kind, str(s.neurons), *(_ratio(s.dead_ratio[i]) for i in cols))
    console.print(table)
    if len(cols) < len(timeline.points):
        console.print(f"{len(timeline.points)} points; {len(cols)} shown (all in --format json or csv)")
    if any(not s.grad_blocked for s in timeline.sites):
        console.print("* leaky kind: dead neurons there still pass gradient")
    for line in death_lines(timeline) or ["no neuron is dead at the last point"]:
        console.print(line, highlight=False, markup=False)


def render_timeline_markdown(timeline: Timeline, heading: str = "###") -> str:
    steps = [p.step for p in timeline.points]
    out = [f"{heading} relu-doctor timeline ({timeline.source}, {len(steps)} points)", ""]
    out.append("| site | kind | neurons | " + " | ".join(f"step {s}" for s in steps) + " |")
    out.append("|---|---|---:|" + "---:|" * len(steps))
    for s in timeline.sites:
        out.append(f"| {code(s.name)} | {s.kind} | {s.neurons} | "
                   + " | ".join(_ratio(v) for v in s.dead_ratio) + " |")
    lines = death_lines(timeline)
    if lines:
        out += ["", *(f"- {line}" for line in lines)]
    if timeline.fail_new_dead is not None:
        verdict = "passed" if timeline.passed else "failed"
        out += ["", f"Gate --fail-new-dead {timeline.fail_new_dead:g}: {verdict}"]
        out += [f"- {v.describe()}" for v in timeline.violations]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ["site", "kind", "neurons", "step", "label", "dead", "dead_ratio", "died", "revived"]


def render_timeline_csv(timeline: Timeline) -> str:
    """One row per (site, point); `died` lists the neurons dead from that step on, `revived` those
    that fired again there (space-separated indices)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in timeline.sites:
        died = deaths_by_step(s)
        revived: dict[int, list[int]] = defaultdict(list)
        for neuron, step in sorted(s.revived.items()):
            revived[step].append(neuron)
        for i, p in enumerate(timeline.points):
            writer.writerow([s.name, s.kind, s.neurons, p.step, p.label,
                             "" if s.dead[i] is None else s.dead[i],
                             "" if s.dead_ratio[i] is None else s.dead_ratio[i],
                             " ".join(map(str, died.get(p.step, []))),
                             " ".join(map(str, revived.get(p.step, [])))])
    return out.getvalue()
