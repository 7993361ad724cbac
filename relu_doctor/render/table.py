"""The Rich table and summary of a scan: one row per site, in execution order, in 80 columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .text import percent, shorten_middle

if TYPE_CHECKING:
    from ..report import Report, Site

BAR_WIDTH = 6
NAME_WIDTH = 22


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


def sites_table(report: Report) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("site", no_wrap=True, max_width=NAME_WIDTH)
    table.add_column("kind", no_wrap=True)
    table.add_column("neurons", justify="right")
    table.add_column("dead", justify="right")
    table.add_column("dead %", justify="right", no_wrap=True)
    table.add_column("sparsity", justify="right")
    table.add_column("dormant", justify="right")
    for s in report.sites:
        style = _severity(s)
        kind = s.kind if s.grad_blocked else f"{s.kind}*"
        table.add_row(
            str(s.index), shorten_middle(s.name, NAME_WIDTH), kind, str(s.neurons), str(s.dead),
            Text(f"{_bar(s.dead_ratio)} {percent(s.dead_ratio):>6}", style=style),
            percent(s.sparsity), str(s.dormant), style=None,
        )
    return table


def summary_text(report: Report) -> Text:
    s = report.summary
    sample = report.sample
    out = Text()
    out.append("\nModel: ", style="bold").append(f"{report.model.label}\n")
    out.append("Sample: ", style="bold").append(
        f"{sample['samples']} inputs ({sample['source']}); a neuron that fires on fewer than "
        f"{percent(s.detection_floor)} of inputs can look dead here by chance.\n")
    out.append("Dead: ", style="bold").append(
        f"{s.dead} of {s.grad_blocked_neurons} neurons in ReLU-type sites ({percent(s.dead_ratio)}), "
        f"never > 0 on any input; ", style="red" if s.dead else "green")
    out.append(f"sparsity {percent(s.sparsity)}, dormant {s.dormant}.\n")
    worst = report.worst_sites()[:3]
    if worst:
        out.append("Worst: ", style="bold").append(
            ", ".join(f"{shorten_middle(x.name, 30)} {percent(x.dead_ratio)}" for x in worst) + "\n")
    out.append(f"dead: never > 0 on any input. dormant: ReDo score <= {report.settings.get('tau', 0.025):g}. "
               "sparsity: outputs <= 0.\n", style="dim")
    if any(not x.grad_blocked for x in report.sites):
        out.append("* leaky kind: dead neurons still pass gradient; not counted as dying ReLUs.\n", style="dim")
    out.append(_gates_text(report))
    return out


def _gates_text(report: Report) -> Text:
    gates = report.gates
    if not gates.checked:
        return Text("Gates: none set (--fail-dead-ratio, --fail-total-dead-ratio).", style="dim")
    if gates.passed:
        limits = ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in gates.checked.items())
        return Text(f"Gates: passed ({limits}).", style="green")
    text = Text(f"Gates: FAILED, {len(gates.violations)} violation(s):", style="bold red")
    for v in gates.violations[:10]:
        text.append(f"\n  {v.describe()}", style="red")
    return text


def report_renderable(report: Report) -> RenderableType:
    """The table and summary as one Rich renderable (Report.__rich__ returns it)."""
    if report.sites:
        return Group(sites_table(report), summary_text(report))
    return Group(Text("No ReLU-family activation ran in this model: nothing to report.\n"), summary_text(report))


def render_table(report: Report, console: Console) -> None:
    console.print(report_renderable(report))
