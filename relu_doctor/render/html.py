"""Self-contained HTML pages of a scan, a diff and a timeline: report in, text out.

Every number comes from the report (metrics defined in stats.py, neuron classes in
neurons.py); this module only lays them out. Every name is escaped (site and node names
are hostile input); the charts are matplotlib SVG (html_charts.py), the frame and the
filter script are in html_page.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..neurons import CLASSES, neuron_classes
from . import html_charts as charts
from .html_page import card, cell, document, esc, figure, filter_box, fragment, root_id, table
from .text import percent

if TYPE_CHECKING:  # render/ reads reports; it never needs them at import time
    from ..compare import Diff
    from ..report import Report, Site

WORST = 20  # sites listed with their dead indices
MAX_INDICES = 200  # dead indices shown per site (the rest: JSON report or --neurons)
TIMELINE_LINES = 8  # sites drawn as lines over time, besides the model
SHOWN_VIOLATIONS = 10  # gate violations listed before the fold


def _salt(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:10]


def _kind(kind: str, grad_blocked: bool) -> str:
    return kind if grad_blocked else f"{kind} (leaky)"


def _indices(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:MAX_INDICES])
    more = f" … and {len(indices) - MAX_INDICES} more" if len(indices) > MAX_INDICES else ""
    return shown + more


def _gates_html(report: Report) -> list[str]:
    g = report.gates
    if not g.checked:
        return ['<p class="sub">Gates: none set (--fail-dead-ratio, --fail-total-dead-ratio).</p>']
    checked = ", ".join(f"{name.replace('_', '-')} {threshold:g}" for name, threshold in g.checked.items())
    out = [f'<p>Gates ({esc(checked)}): <span class="{"pass" if g.passed else "fail"}">'
           f'{"passed" if g.passed else "FAILED"}</span></p>']
    out += _violation_list([v.describe() for v in g.violations])
    return out


def _site_row(s: Site, classes: dict[str, int]) -> str:
    tip = f"#{s.index} {s.name} ({_kind(s.kind, s.grad_blocked)}): {s.dead}/{s.neurons} dead, {percent(s.dead_ratio)}"
    cells = [cell(s.index, s.index), cell(s.name, cls="n"), cell(_kind(s.kind, s.grad_blocked)),
             cell(s.neurons, s.neurons), cell(s.dead, s.dead), cell(percent(s.dead_ratio), s.dead_ratio),
             cell(classes["rarely active"], classes["rarely active"]), cell(s.always_on, s.always_on),
             cell(s.saturated, s.saturated), cell(s.dormant, s.dormant), cell(percent(s.sparsity), s.sparsity)]
    leaky = "" if s.grad_blocked else ' class="leaky"'
    return f'<tr{leaky} data-i="{s.index}" data-name="{esc(s.name)}" data-tip="{esc(tip)}">{"".join(cells)}</tr>'


_SITE_HEADERS = [("#", ""), ("site", "n"), ("kind", ""), ("neurons", ""), ("dead", ""), ("dead %", ""),
                 ("rarely active", ""), ("always on", ""), ("saturated", ""), ("dormant", ""), ("sparsity", "")]


def _worst_html(report: Report) -> list[str]:
    worst = report.worst_sites()
    if not worst:
        return ["<h2>Sites with dead neurons</h2>", '<p class="pass">No dead neurons in ReLU-type sites.</p>']
    rows = [f'<tr data-i="{s.index}" data-name="{esc(s.name)}">{cell(s.index, s.index)}{cell(s.name, cls="n")}'
            f'{cell(s.dead, s.dead)}{cell(percent(s.dead_ratio), s.dead_ratio)}'
            f'{cell(_indices(s.dead_indices), cls="idx")}</tr>' for s in worst[:WORST]]
    title = f"worst {WORST} of {len(worst)}" if len(worst) > WORST else f"{len(worst)}"
    return [f"<h2>Sites with dead neurons ({esc(title)}, highest dead ratio first)</h2>",
            table([("#", ""), ("site", "n"), ("dead", ""), ("dead %", ""), ("dead neuron indices", "n")], rows)]


def _scan_body(report: Report, salt: str) -> list[str]:
    s = report.summary
    model = report.model
    sample = report.sample
    where = (f"{esc(model.path)} ({esc(model.format)}, sha256 {esc(str(model.sha256 or '')[:12])})" if model.path
             else esc(model.label))  # "in-memory module": no path, no sha256
    body = [f"<h1>relu-doctor: {s.dead} dead of {s.grad_blocked_neurons} ReLU neurons ({percent(s.dead_ratio)})</h1>",
            f'<p class="sub">{where} · {esc(sample.get("samples"))} inputs ({esc(sample.get("source"))})</p>',
            '<div class="cards">', card(str(s.sites), "sites"), card(str(s.neurons), "neurons"),
            card(f"{s.dead}", "dead (ReLU-type)", "fail" if s.dead else "pass"),
            card(percent(s.dead_ratio), "dead ratio"),
            card(percent(s.sparsity), "sparsity"), card(str(s.dormant), "dormant"),
            card(percent(s.detection_floor), "detection floor"), "</div>"]
    body += _gates_html(report)
    body += [f'<p class="warn">{esc(w)}</p>' for w in report.warnings]
    if not report.sites:
        return [*body, "<p>No ReLU-family activation ran in this model.</p>"]
    sites = report.sites
    indices, names = [x.index for x in sites], [x.name for x in sites]
    leaky = [not x.grad_blocked for x in sites]
    limit = report.gates.checked.get("fail_dead_ratio")
    classes = [neuron_classes(x) for x in sites]
    fractions = [[c[k] / max(x.neurons, 1) for k in CLASSES] for x, c in zip(sites, classes)]
    body += ["<h2>Dead % per site</h2>",
             figure(charts.dead_chart(indices, names, [100 * x.dead_ratio for x in sites], leaky,
                                      None if limit is None else 100 * limit, salt),
                    "Execution order. Hover a bar for its site, click it to find the site in the table."),
             "<h2>Neurons by how often they fire</h2>",
             figure(charts.classes_chart(indices, names, fractions, CLASSES, salt),
                    "Rarely active: fires on fewer than 1% of its entries. Always on: never below 0. "
                    "Saturated: always at its upper bound (relu6, clip).")]
    body += _worst_html(report)
    body += [f"<h2>All {len(sites)} sites</h2>", filter_box(),
             table(_SITE_HEADERS, [_site_row(x, c) for x, c in zip(sites, classes)])]
    return body


def _footer(what: str) -> str:
    from .. import __version__

    return f"<footer>{esc(what)} · relu-doctor {esc(__version__)}</footer>"


def render_html(report: Report, standalone: bool = True) -> str:
    """The scan's page: a whole file, or (standalone=False) a fragment for Jupyter."""
    salt = _salt("scan", report.model.get("sha256"), report.sample.get("samples"),
                 [(s.name, s.dead) for s in report.sites])
    body = [*_scan_body(report, salt), _footer("scan report")]
    root = root_id(salt)
    path = report.model.get("path") or "model"
    return document(f"relu-doctor: {path}", root, body) if standalone else fragment(root, body)


# -- diff ----------------------------------------------------------------------------------------------------------


def _pp(x: float) -> str:
    return f"{x:+.1f}" if round(x, 1) else "0.0"


def render_diff_html(d: Diff, new: Report | None = None) -> str:
    """The diff's page; with `new`, the new scan's page follows (scan --baseline)."""
    s = d.summary
    salt = _salt("diff", d.base, d.new, [(c.name, c.dead, c.dead_base) for c in d.sites])
    gate = ('<p class="sub">Gate: none set (--fail-increase PP).</p>' if d.fail_increase is None else
            f'<p>Gate --fail-increase {d.fail_increase:g} pp: <span class="{"pass" if d.passed else "fail"}">'
            f'{"passed" if d.passed else "FAILED"}</span></p>')
    body = [f"<h1>relu-doctor diff: {esc(s['dead_base'])} → {esc(s['dead'])} dead ReLU neurons "
            f"({_pp(s['dead_pp'])} pp)</h1>",
            f'<p class="sub">base {esc(d.base.get("path") or "(in memory)")} · new '
            f'{esc(d.new.get("path") or "(in memory)")}</p>',
            '<div class="cards">', card(f"{percent(s['dead_ratio_base'])} → {percent(s['dead_ratio'])}", "dead ratio"),
            card(_pp(s["dead_pp"]) + " pp", "change", "fail" if s["dead_pp"] > 0 else "pass"),
            card(str(s["sites_matched"]), "sites matched"), card(str(s["sites_changed"]), "changed"),
            card(str(len(d.added)), "added"), card(str(len(d.removed)), "removed"), "</div>", gate]
    body += _violation_list([v.describe() for v in d.violations])
    body += [f'<p class="warn">{esc(w)}</p>' for w in d.warnings]
    if d.sites:
        indices = list(range(len(d.sites)))
        body += ["<h2>Change of dead % per site (new - base)</h2>", figure(charts.change_chart(
            indices, [c.name for c in d.sites], [100 * c.dead_ratio_base for c in d.sites],
            [100 * c.dead_ratio for c in d.sites], [not c.grad_blocked for c in d.sites], salt),
            "Matched sites in the new report's order; red: more dead, green: fewer, grey: leaky kind.")]
        rows = []
        for k, c in enumerate(d.sites):
            tip = f"{c.name}: {percent(c.dead_ratio_base)} → {percent(c.dead_ratio)} ({_pp(c.dead_pp)} pp)"
            rows.append(
                f'<tr data-i="{k}" data-name="{esc(c.name)}" data-tip="{esc(tip)}">{cell(k, k)}{cell(c.name, cls="n")}'
                f'{cell(_kind(c.kind, c.grad_blocked) if c.kind_base is None else f"{c.kind_base} → {c.kind}")}'
                f'{cell(f"{c.dead_base} → {c.dead}", c.dead - c.dead_base)}'
                f'{cell(f"{percent(c.dead_ratio_base)} → {percent(c.dead_ratio)}", c.dead_ratio)}'
                f'{cell(_pp(c.dead_pp), c.dead_pp)}{cell(_pp(c.sparsity_pp), c.sparsity_pp)}'
                f'{cell(f"{c.dormant_base} → {c.dormant}", c.dormant - c.dormant_base)}'
                f'{cell(_indices(c.newly_dead), cls="idx")}{cell(_indices(c.revived), cls="idx")}</tr>')
        body += [f"<h2>{len(d.sites)} matched sites</h2>", filter_box(), table(
            [("#", ""), ("site", "n"), ("kind", ""), ("dead", ""), ("dead %", ""), ("Δ pp", ""), ("sparsity Δ pp", ""),
             ("dormant", ""), ("newly dead", "idx"), ("revived", "idx")], rows)]
    for title, only in (("Added sites", d.added), ("Removed sites", d.removed)):
        if only:
            body += [f"<h2>{title} ({len(only)})</h2>", table(
                [("site", "n"), ("kind", ""), ("neurons", ""), ("dead", ""), ("dead %", "")],
                [f'<tr>{cell(o.name, cls="n")}{cell(_kind(o.kind, o.grad_blocked))}{cell(o.neurons, o.neurons)}'
                 f'{cell(o.dead, o.dead)}{cell(percent(o.dead_ratio), o.dead_ratio)}</tr>' for o in only])]
    if new is not None:
        body += ["<h2>New scan</h2>", *_scan_body(new, salt + "new")[1:]]
    body.append(_footer("diff"))
    return document("relu-doctor diff", root_id(salt), body)


# -- timeline (SPEC 12, schema relu-doctor/timeline/v1) ------------------------------------------------------------


def render_timeline_html(timeline: dict[str, Any]) -> str:
    """The timeline's page from its JSON form (`Timeline.to_dict()`, schema relu-doctor/timeline/v1):
    `points` (step, summary), `sites` (name, kind, grad_blocked, dead_ratio per point with None
    where the site did not run, died_at and revived {neuron: step}), `gates`, `warnings`."""
    points = list(timeline.get("points", []))
    sites = list(timeline.get("sites", []))
    steps = [int(p["step"]) for p in points]
    salt = _salt("timeline", steps, [s.get("name") for s in sites])
    leaky = [not _grad_blocked(s) for s in sites]
    model = [100 * float(p.get("summary", {}).get("dead_ratio", 0.0)) for p in points]
    last = points[-1]["summary"] if points else {}
    body = [f"<h1>relu-doctor timeline: {len(points)} points, {len(sites)} sites</h1>",
            f'<p class="sub">steps {esc(steps[0] if steps else "-")} to {esc(steps[-1] if steps else "-")}</p>',
            '<div class="cards">', card(percent(model[0] / 100) if model else "-", "dead ratio, first point"),
            card(percent(model[-1] / 100) if model else "-", "dead ratio, last point",
                 "fail" if model and model[-1] > model[0] else "pass"),
            card(str(last.get("dead", "-")), "dead at the end"),
            card(str(_died_during(sites, steps)), "died during the run"), "</div>"]
    body += _timeline_gates(timeline.get("gates"))
    body += [f'<p class="warn">{esc(w)}</p>' for w in timeline.get("warnings", [])]
    if not points or not sites:
        return document("relu-doctor timeline", root_id(salt), [*body, "<p>Nothing measured.</p>", _footer("timeline")])
    ratios = [[100 * float(r) if r is not None else float("nan") for r in s.get("dead_ratio", [])] for s in sites]
    final = [r[-1] if r and r[-1] == r[-1] else 0.0 for r in ratios]
    top = sorted(range(len(sites)), key=lambda i: (-final[i], i))[:TIMELINE_LINES]
    top = [i for i in top if final[i] > 0]
    names = [str(s.get("name")) for s in sites]
    body += ["<h2>Dead % over time</h2>",
             figure(charts.timeline_lines(steps, [(names[i], ratios[i]) for i in top], model, salt),
                    f"Black: the model's dead ratio over ReLU-type sites; colours: the {len(top)} sites with the "
                    "highest dead % at the last point."),
             "<h2>Dead % per site over time</h2>",
             figure(charts.heatmap(steps, names, ratios, salt), "Rows: sites in execution order."),
             f"<h2>Dead % per site at step {steps[-1]}</h2>",
             figure(charts.dead_chart(list(range(len(sites))), names, final, leaky, None, salt))]
    rows = []
    for i, s in enumerate(sites):
        died = s.get("died_at") or {}
        first = min(died.values()) if died else None
        start = _first(ratios[i])
        start_text = "-" if start is None else percent(start / 100)
        tip = f"{names[i]}: {start_text} → {percent(final[i] / 100)}"
        revived = len(s.get("revived") or {})
        rows.append(f'<tr data-i="{i}" data-name="{esc(names[i])}" data-tip="{esc(tip)}">{cell(i, i)}'
                    f'{cell(names[i], cls="n")}{cell(_kind(str(s.get("kind")), not leaky[i]))}'
                    f'{cell(start_text, start)}{cell(percent(final[i] / 100), final[i])}{cell(len(died), len(died))}'
                    f'{cell(revived, revived)}{cell("-" if first is None else first, first)}'
                    f'{cell(_died(died), cls="idx")}</tr>')
    body += [f"<h2>All {len(sites)} sites</h2>", filter_box(), table(
        [("#", ""), ("site", "n"), ("kind", ""), ("dead % first", ""), ("dead % last", ""), ("neurons died", ""),
         ("revived", ""), ("first death (step)", ""), ("neuron: step it died", "n")], rows), _footer("timeline")]
    return document("relu-doctor timeline", root_id(salt), body)


def _timeline_gates(gates: Any) -> list[str]:
    if not isinstance(gates, dict) or not gates.get("checked"):
        return ['<p class="sub">Gate: none set (--fail-new-dead PP).</p>']
    out = [f'<p>Gate --fail-new-dead {esc(gates["checked"].get("fail_new_dead"))} pp: '
           f'<span class="{"pass" if gates.get("passed") else "fail"}">'
           f'{"passed" if gates.get("passed") else "FAILED"}</span></p>']
    return out + _violation_list([f"site {v.get('site')}: {v.get('new_dead')} of {v.get('neurons')} neurons died "
                                  "since the first point" for v in gates.get("violations", [])])


def _violation_list(lines: Sequence[str]) -> list[str]:
    """Gate violations as a list; beyond SHOWN_VIOLATIONS folded (the sites' table says it all again)."""
    items = [f'<li class="fail">{esc(line)}</li>' for line in lines]
    if len(items) > SHOWN_VIOLATIONS:
        return [f"<ul>{''.join(items[:SHOWN_VIOLATIONS])}</ul>",
                f"<details><summary>{len(items) - SHOWN_VIOLATIONS} more sites</summary>"
                f"<ul>{''.join(items[SHOWN_VIOLATIONS:])}</ul></details>"]
    return [f"<ul>{''.join(items)}</ul>"] if items else []


def _died_during(sites: Sequence[dict[str, Any]], steps: Sequence[int]) -> int:
    """Neurons dead at the last point that were not dead from the first point on."""
    start = steps[0] if steps else None
    return sum(1 for s in sites for step in (s.get("died_at") or {}).values() if step != start)


def _first(values: Sequence[float]) -> float | None:
    """The first measured value (a site can be missing at the first points)."""
    return next((v for v in values if v == v), None)


def _grad_blocked(site: dict[str, Any]) -> bool:
    if "grad_blocked" in site:
        return bool(site["grad_blocked"])
    from ..kinds import KINDS

    kind = KINDS.get(str(site.get("kind")))
    return kind.grad_blocked if kind is not None else True


def _died(died: dict[Any, Any]) -> str:
    items: Iterable[tuple[Any, Any]] = sorted(died.items(), key=lambda kv: (kv[1], int(kv[0])))
    listed = [f"{k}: {v}" for k, v in items]
    more = f" … and {len(listed) - MAX_INDICES} more" if len(listed) > MAX_INDICES else ""
    return ", ".join(listed[:MAX_INDICES]) + more
