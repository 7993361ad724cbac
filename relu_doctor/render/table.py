"""The Rich table and summary of a scan: one row per site, in execution order, as wide as the console.

Site names get the width the other columns leave (80 columns at least fit); a name that
must be shortened keeps what tells it apart from the others (text.shorten_names). Every
name passes through escape.py: a model's names never reach the terminal raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .escape import rich_text, visible
from .text import percent, proof_line, shorten_middle, shorten_names

if TYPE_CHECKING:
    from ..report import Report, Site

BAR_WIDTH = 6
MIN_NAME_WIDTH = 12
GAP = 2  # Rich's padding between two columns of a box-less table


@dataclass(frozen=True)
class Rows:
    """Which sites the table shows: --only-dead (sites with a dead neuron), --top N (most dead first)."""

    top: int | None = None
    only_dead: bool = False

    def choose(self, sites: list[Site]) -> list[Site]:
        chosen = [s for s in sites if s.dead] if self.only_dead else list(sites)
        if self.top is not None:
            worst = sorted(chosen, key=lambda s: (not s.grad_blocked, -s.dead_ratio, -s.dead, s.index))
            chosen = worst[:self.top]
        return chosen

    def describe(self, shown: int, total: int) -> str | None:
        if shown == total and not (self.top or self.only_dead):
            return None
        how = [f"--top {self.top}: most dead first"] if self.top is not None else []
        how += ["--only-dead"] if self.only_dead else []
        return f"Showing {shown} of {total} sites ({', '.join(how)})."


def _severity(site: Site) -> str:
    if not site.grad_blocked:
        return "dim" if site.dead else ""
    if site.dead_ratio >= 0.5:
        return "bold red"
    if site.dead_ratio >= 0.1:
        return "red"
    if site.dead:
        return "yellow"
    return "green"


def _bar(ratio: float) -> str:
    filled = round(ratio * BAR_WIDTH)
    return "█" * filled + "·" * (BAR_WIDTH - filled)


_HEADERS = ("#", "site", "kind", "neurons", "dead", "dead %", "sparsity", "dormant")


def _cells(s: Site) -> list[str]:
    kind = visible(s.kind) if s.grad_blocked else f"{visible(s.kind)}*"
    return [str(s.index), kind, str(s.neurons), str(s.dead), f"{_bar(s.dead_ratio)} {percent(s.dead_ratio):>6}",
            percent(s.sparsity), str(s.dormant)]


def sites_table(sites: list[Site], width: int) -> Table:
    """The rows of `sites`; names get what `width` leaves after the other columns."""
    rows = [_cells(s) for s in sites]
    others = [_HEADERS[0], *_HEADERS[2:]]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(others)]
    name_width = max(MIN_NAME_WIDTH, width - sum(widths) - GAP * len(others))
    names = shorten_names([visible(s.name) for s in sites], name_width)
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("#", justify="right", style="dim", no_wrap=True, min_width=widths[0])
    table.add_column("site", no_wrap=True, max_width=name_width, overflow="ellipsis")
    for header, w in zip(others[1:], widths[1:]):
        table.add_column(header, justify="left" if header == "kind" else "right", no_wrap=True, min_width=w)
    for s, r in zip(sites, rows):
        table.add_row(r[0], rich_text(names[visible(s.name)]), r[1], r[2], r[3], Text(r[4], style=_severity(s)),
                      r[5], r[6])
    return table


def summary_text(report: Report, width: int = 80) -> Text:
    s = report.summary
    sample = report.sample
    out = Text()
    out.append("\nModel: ", style="bold").append(f"{visible(report.model.label)}\n")
    out.append("Sample: ", style="bold").append(
        f"{sample['samples']} inputs ({visible(sample['source'])}); a neuron that fires on fewer than "
        f"{percent(s.detection_floor)} of inputs can look dead here by chance.\n")
    out.append("Dead: ", style="bold")
    if s.grad_blocked_neurons:
        out.append(f"{s.dead} of {s.grad_blocked_neurons} neurons in ReLU-type sites ({percent(s.dead_ratio)}), "
                   "never > 0 on any input; ", style="red" if s.dead else "green")
    elif report.sites:  # only leaky kinds: no dying ReLU is possible, but their dead neurons still show
        out.append(f"no ReLU-type site (every site is a leaky kind); {s.dead_all} of {s.neurons} leaky neurons "
                   "never > 0; ")
    else:
        out.append("no site; ")
    out.append(f"sparsity {percent(s.sparsity)}, dormant {s.dormant}.\n")
    proven = proof_line(report)
    if proven:
        out.append("Provably dead: ", style="bold").append(proven + "\n")
    worst = report.worst_sites()[:3]
    if worst:
        out.append("Worst: ", style="bold").append(
            ", ".join(f"{shorten_middle(visible(x.name), 30)} {percent(x.dead_ratio)}" for x in worst) + "\n")
    tau = report.settings.get("tau", 0.025)
    legend = ["dead: never > 0 on any input.", f"dormant: ReDo score <= {tau:g}.", "sparsity: share of outputs <= 0."]
    out.append(_lines(legend, width), style="dim")
    if any(not x.grad_blocked for x in report.sites):
        out.append("* leaky kind: dead neurons still pass gradient; not counted as dying ReLUs.\n", style="dim")
    out.append(_gates_text(report))
    return out


def _lines(phrases: list[str], width: int) -> str:
    """Phrases joined by spaces, broken between phrases (never inside one) to fit `width`."""
    lines: list[str] = []
    for phrase in phrases:
        if lines and len(lines[-1]) + 1 + len(phrase) <= width:
            lines[-1] += " " + phrase
        else:
            lines.append(phrase)
    return "".join(line + "\n" for line in lines)


def _gates_text(report: Report) -> Text:
    gates = report.gates
    if not gates.checked:
        return Text("Gates: none set (--fail-dead-ratio, --fail-total-dead-ratio).", style="dim")
    limits = ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in gates.checked.items())
    if report.sample.get("shard"):  # a shard records its gates; merge judges the whole (SPEC 11)
        return Text(f"Gates: recorded, not judged ({limits}): a shard is judged by `relu-doctor merge`.",
                    style="dim")
    if gates.passed:
        return Text(f"Gates: passed ({limits}).", style="green")
    text = Text(f"Gates: FAILED, {len(gates.violations)} violation(s):", style="bold red")
    for v in gates.violations[:10]:
        text.append(f"\n  {visible(v.describe())}", style="red")
    return text


def report_renderable(report: Report, rows: Rows | None = None, width: int = 80) -> RenderableType:
    """The table and summary as one Rich renderable (Report.__rich__ returns it)."""
    rows = rows or Rows()
    shown = rows.choose(report.sites)
    note = rows.describe(len(shown), len(report.sites))
    summary = summary_text(report, width)
    if note:
        summary = Text.assemble(Text("\n" + note, style="dim"), summary)
    if shown:
        return Group(sites_table(shown, width), summary)
    if report.sites:
        return Group(Text("No site matches (--only-dead: no site has a dead neuron)."), summary)
    return Group(Text("No ReLU-family activation ran in this model: nothing to report.\n"), summary)


def render_table(report: Report, console: Console, rows: Rows | None = None) -> None:
    console.print(report_renderable(report, rows, console.width))
