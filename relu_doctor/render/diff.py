"""A `Diff` as a Rich table (80 columns) or Markdown; the JSON is `Diff.to_json()`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .escape import md_text, rich_text, visible
from .markdown import code, render_markdown
from .text import percent, plain_text, shorten_middle, shorten_names

if TYPE_CHECKING:
    from ..compare import Diff, IncreaseViolation, SiteChange, SiteOnly
    from ..report import Report, Violation

DIFF_FORMATS = ("table", "json", "markdown")

NAME_WIDTH = 24  # the site column's least width; it takes what the console's width leaves
TOP = 10  # changed sites shown in Markdown before the folded full list
MAX_ROWS = 500  # keeps a huge model's summary well under GitHub's 1 MiB step-summary limit


def _pp(x: float) -> str:
    return f"{x:+.1f}" if round(x, 1) else "0.0"


def _arrow(a: object, b: object) -> str:
    return f"{a}" if a == b else f"{a}→{b}"


def _ratio_arrow(a: float, b: float) -> str:
    return percent(b) if round(a, 3) == round(b, 3) else f"{100 * a:.1f}→{percent(b)}"


def _style(c: SiteChange, d: Diff) -> str:
    if any(v.site == c.name for v in d.violations):
        return "bold red"
    if c.dead_pp > 0 and c.grad_blocked:
        return "red"
    if c.dead_pp < 0:
        return "green"
    return "" if c.changed else "dim"


def _kind(kind: str, grad_blocked: bool) -> str:
    """For Markdown."""
    return md_text(kind) if grad_blocked else f"{md_text(kind)} (leaky)"


_HEADERS = ("dead", "dead %", "Δ pp", "Δ sparse", "dormant")


def diff_table(d: Diff, width: int = 80) -> Table:
    """site, dead count, dead ratio, their change, sparsity change, dormant, in `width` columns.

    Names get the width the other columns leave, shortened as in the scan's table (keeping
    their end and what tells them apart); `*` marks a leaky kind (no kind column: it rarely changes).
    """
    rows: list[tuple[str, bool, list[str], str]] = [
        (visible(c.name), c.grad_blocked, [_arrow(c.dead_base, c.dead), _ratio_arrow(c.dead_ratio_base, c.dead_ratio),
                                           _pp(c.dead_pp), _pp(c.sparsity_pp), _arrow(c.dormant_base, c.dormant)],
         _style(c, d)) for c in d.sites]
    rows += [(f"{mark}{visible(s.name)}", s.grad_blocked,
              [str(s.dead), percent(s.dead_ratio), "new" if mark == "+ " else "gone", "", ""], "yellow")
             for s, mark in [(s, "+ ") for s in d.added] + [(s, "- ") for s in d.removed]]
    widths = [max([len(h)] + [len(r[2][i]) for r in rows]) for i, h in enumerate(_HEADERS)]
    name_width = max(NAME_WIDTH, width - sum(widths) - 2 * len(widths))
    short = shorten_names([name for name, *_ in rows], name_width - 1)  # room for the leaky mark
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("site", no_wrap=True, max_width=name_width)
    for header, w in zip(_HEADERS, widths):
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    for name, grad_blocked, cells, style in rows:
        table.add_row(rich_text(short[name] + ("" if grad_blocked else "*")), *cells, style=style)
    return table


def summary_text(d: Diff) -> Text:
    s = d.summary
    out = Text()
    out.append("\nDead: ", style="bold").append(
        f"{_arrow(s['dead_base'], s['dead'])} neurons in ReLU-type sites "
        f"({_ratio_arrow(s['dead_ratio_base'], s['dead_ratio'])}, {_pp(s['dead_pp'])} pp); sparsity "
        f"{_ratio_arrow(s['sparsity_base'], s['sparsity'])}; dormant {_arrow(s['dormant_base'], s['dormant'])}.\n")
    out.append("Sites: ", style="bold").append(
        f"{s['sites_matched']} matched by name ({s['sites_changed']} changed), {len(d.added)} added, "
        f"{len(d.removed)} removed.\n")
    for c in (c for c in d.sites if c.kind_base is not None):
        out.append("Kind: ", style="bold").append(
            f"{shorten_middle(visible(c.name), 40)} {visible(c.kind_base)} → {visible(c.kind)}.\n")
    if not all(c.grad_blocked for c in d.sites) or not all(c.grad_blocked for c in [*d.added, *d.removed]):
        out.append("* leaky kind: dead neurons still pass gradient; never fail --fail-increase.\n", style="dim")
    out.append(_gate_text(d))
    return out


def _gate_text(d: Diff) -> Text:
    if d.fail_increase is None:
        return Text("Gate: none set (--fail-increase PP).", style="dim")
    if d.passed:
        return Text(f"Gate: passed (no site's dead ratio grew by more than {d.fail_increase:g} pp).", style="green")
    text = Text(f"Gate: FAILED, {len(d.violations)} site(s) grew by more than {d.fail_increase:g} pp:",
                style="bold red")
    for v in d.violations[:10]:
        text.append(f"\n  {visible(v.describe())}", style="red")
    return text


def render_diff_table(d: Diff, console: Console) -> None:
    if d.sites or d.added or d.removed:
        console.print(Group(diff_table(d, console.width), summary_text(d)))
    else:
        console.print(Text("Neither report has a ReLU-family site: nothing to compare."), summary_text(d))


# -- Markdown ------------------------------------------------------------------------------------------------------

_HEADER = ("| site | kind | dead | dead % | Δ pp | sparsity Δ pp | dormant |\n"
           "|---|---|---:|---:|---:|---:|---:|")


def _md_row(c: SiteChange, d: Diff) -> str:
    flag = " ❌" if any(v.site == c.name for v in d.violations) else ""
    kind = _kind(c.kind, c.grad_blocked) if c.kind_base is None else f"{md_text(c.kind_base)} → {md_text(c.kind)}"
    return (f"| {code(c.name)} | {kind} | {_arrow(c.dead_base, c.dead)} | "
            f"{_ratio_arrow(c.dead_ratio_base, c.dead_ratio)} | {_pp(c.dead_pp)}{flag} | {_pp(c.sparsity_pp)} | "
            f"{_arrow(c.dormant_base, c.dormant)} |")


def _md_only(title: str, sites: list[SiteOnly]) -> list[str]:
    if not sites:
        return []
    items = ", ".join(f"{code(s.name)} ({_kind(s.kind, s.grad_blocked)}, {s.dead}/{s.neurons} dead)"
                      for s in sites[:MAX_ROWS])
    more = f" and {len(sites) - MAX_ROWS} more" if len(sites) > MAX_ROWS else ""
    return [f"**{title}:** {items}{more}", ""]


def render_diff_markdown(d: Diff, new: Report | None = None) -> str:
    """Compact Markdown for a PR comment or $GITHUB_STEP_SUMMARY; `new`'s full report folded at the end."""
    s = d.summary
    gate = ("" if d.fail_increase is None else
            f" Gate --fail-increase {d.fail_increase:g} pp: " + ("✅ passed." if d.passed else "❌ failed."))
    if new is not None and new.gates.checked:
        gate += " Gates of the new scan: " + ("✅ passed." if new.gates.passed else "❌ failed.")
    lines = [
        f"### relu-doctor diff: {_arrow(s['dead_base'], s['dead'])} dead ReLU neurons "
        f"({_ratio_arrow(s['dead_ratio_base'], s['dead_ratio'])}, {_pp(s['dead_pp'])} pp)",
        "",
        f"{s['sites_matched']} sites matched by name, {s['sites_changed']} changed, {len(d.added)} added, "
        f"{len(d.removed)} removed. Sparsity {_ratio_arrow(s['sparsity_base'], s['sparsity'])}, dormant "
        f"{_arrow(s['dormant_base'], s['dormant'])}.{gate}",
        "",
    ]
    # The new scan's own gates (--fail-dead-ratio ...) too: the summary is read when either fails.
    failed: list[IncreaseViolation | Violation] = [*d.violations, *(new.gates.violations if new else [])]
    lines += [f"- ❌ {md_text(v.describe())}" for v in failed] + ([""] if failed else [])
    lines += [f"> Note: {md_text(w)}." for w in d.warnings] + ([""] if d.warnings else [])
    changed = sorted((c for c in d.sites if c.changed), key=lambda c: (-c.dead_pp, c.name))
    if changed:
        title = f"**Changed sites** (largest increase first{', top ' + str(TOP) if len(changed) > TOP else ''})"
        lines += [title, "", _HEADER, *(_md_row(c, d) for c in changed[:TOP]), ""]
    elif d.sites:
        lines += ["No matched site changed.", ""]
    lines += _md_only("Added sites", d.added) + _md_only("Removed sites", d.removed)
    if len(d.sites) > len(changed[:TOP]):
        lines += [f"<details><summary>All {len(d.sites)} matched sites</summary>", "", _HEADER,
                  *(_md_row(c, d) for c in d.sites[:MAX_ROWS]), *_more(len(d.sites)), "", "</details>", ""]
    if new is not None:
        lines += ["<details><summary>New report</summary>", "", render_markdown(new, heading="####").rstrip(), "",
                  "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_diff(d: Diff, fmt: str, new: Report | None = None, width: int = 80) -> str:
    """The diff as `fmt` text; Markdown folds `new`'s full report at the end."""
    if fmt == "json":
        return d.to_json()
    if fmt == "markdown":
        return render_diff_markdown(d, new)
    if fmt == "html":
        from .html import render_diff_html

        return render_diff_html(d, new)
    return plain_text(lambda console: render_diff_table(d, console), width)


def _more(n: int) -> list[str]:
    return [] if n <= MAX_ROWS else ["", f"… {n - MAX_ROWS} more sites: see the JSON diff (--format json)."]
