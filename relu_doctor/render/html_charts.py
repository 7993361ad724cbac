"""The charts of the HTML pages, drawn by matplotlib as inline SVG (no script, no font fetched).

Chosen over altair + vl-convert by measurement (benchmarks/html_charts.py): for 500 sites
the same two bar charts are 586 KB vs 619 KB and render in about the same time, but a
500 x 50 site-by-time heatmap is 170 KB as matplotlib's embedded image vs 4.1 MB of
Vega-Lite rectangles, and the install is smaller (~95 MB vs ~105 MB with the V8 binary).

Text goes out as SVG <text> (matplotlib escapes it as XML) with mathtext off, so a site
name holding `$`, `<` or `&` is drawn as written and cannot inject markup. Each bar of a
per-site chart carries an id (`dead-INDEX`, `change-INDEX`) that the page's script uses
to link bars to table rows; ids are salted per chart so that two reports in one notebook
do not share clip paths.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from ..errors import UserError
from .text import shorten_middle

RED, GREY, GREEN = "#c0392b", "#9aa5b1", "#27ae60"
CLASS_COLOURS = ("#c0392b", "#f39c12", "#7fb3d5", "#1f618d", "#8e44ad")  # dead ... saturated
NAME_TICKS = 40  # up to this many sites, the x axis is labelled by name, else by site number
WIDTH = 11.0  # inches at 72 pt: about the width of the page's column


def matplotlib() -> Any:
    """The matplotlib module, or the exit-2 error saying how to install it."""
    try:
        import matplotlib as mpl
    except ImportError:
        raise UserError("the HTML report needs matplotlib, which is not installed",
                        "Install it with: pip install 'relu-doctor[html]'") from None
    return mpl


_RC = {
    "svg.fonttype": "none",  # text stays text: small, selectable, drawn with the browser's fonts
    "text.parse_math": False,  # `$x$` in a site name is not mathtext
    "text.usetex": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 72,
    "savefig.dpi": 110,  # resolution of the rasterized parts only
}


def _svg(fig: Any, salt: str) -> str:
    """The figure as an <svg> element that scales with its container."""
    buffer = io.StringIO()
    with matplotlib().rc_context({"svg.hashsalt": salt}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    # width/height in pt fix the size; the viewBox alone lets CSS scale the chart to the page
    return re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 role="img"', svg, count=1)


def _figure(height: float) -> tuple[Any, Any]:
    """A Figure without pyplot: no global state, and a notebook's own backend is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height))
    return fig, fig.add_subplot()


def _site_axis(ax: Any, indices: Sequence[int], names: Sequence[str]) -> None:
    if len(names) <= NAME_TICKS:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([shorten_middle(n, 28) for n in names], rotation=60, ha="right", fontsize=8)
    else:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=20))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: str(indices[int(x)]) if 0 <= x < len(indices) else ""))
        ax.set_xlabel("site (execution order)")
    ax.set_xlim(-0.6, len(names) - 0.4)


def _bars(ax: Any, heights: Sequence[float], colours: Sequence[str], gids: Sequence[str],
          hatched: Sequence[bool] = ()) -> None:
    """One rectangle per site, each its own SVG element with an id. Added as artists with the
    axis limits set by the caller: `ax.bar` updates the data limits per bar, which costs
    seconds for 500 sites."""
    from matplotlib.patches import Rectangle

    for x, (h, colour, gid) in enumerate(zip(heights, colours, gids)):
        bar = Rectangle((x - 0.4, min(h, 0.0)), 0.8, abs(h), facecolor=colour, linewidth=0)
        bar.set_gid(gid)
        if hatched and hatched[x]:
            bar.set_hatch("///")
            bar.set_edgecolor("white")
        ax.add_artist(bar)


def dead_chart(indices: Sequence[int], names: Sequence[str], dead_pct: Sequence[float],
               leaky: Sequence[bool], limit_pct: float | None, salt: str) -> str:
    """One bar per site in execution order; leaky kinds grey and hatched; the gate as a line."""
    mpl = matplotlib()
    with mpl.rc_context(_RC):
        fig, ax = _figure(3.2)
        _bars(ax, dead_pct, [GREY if lk else RED for lk in leaky], [f"dead-{i}" for i in indices], leaky)
        if limit_pct is not None:
            ax.axhline(limit_pct, color="black", linestyle="--", linewidth=0.8)
            ax.annotate(f"gate {limit_pct:g}%", (1, limit_pct), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("dead neurons (%)")
        _site_axis(ax, indices, names)
        from matplotlib.patches import Patch

        handles = [Patch(color=RED, label="ReLU-type (no gradient when dead)")]
        if any(leaky):
            handles.append(Patch(facecolor=GREY, hatch="///", edgecolor="white",
                                 label="leaky kind (still passes gradient)"))
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), frameon=False, fontsize=8, ncols=2)
        return _svg(fig, salt + "dead")


def classes_chart(indices: Sequence[int], names: Sequence[str], fractions: Sequence[Sequence[float]],
                  classes: Sequence[str], salt: str) -> str:
    """Per site, the share of neurons in each firing class, stacked to 100%: bars for a few
    sites, stepped areas drawn as one embedded image for many (a tenth of the vector size)."""
    mpl = matplotlib()
    with mpl.rc_context(_RC):
        fig, ax = _figure(2.8)
        x = list(range(len(names)))
        bottom = [0.0] * len(names)
        for k, (label, colour) in enumerate(zip(classes, CLASS_COLOURS)):
            top = [b + 100 * f[k] for b, f in zip(bottom, fractions)]
            if len(names) <= NAME_TICKS:
                ax.bar(x, [t - b for t, b in zip(top, bottom)], bottom=bottom, width=0.9, color=colour, linewidth=0,
                       label=label)
            else:
                ax.fill_between(x, bottom, top, step="mid", color=colour, linewidth=0, label=label, rasterized=True)
            bottom = top
        ax.set_ylim(0, 100)
        ax.set_ylabel("neurons (%)")
        _site_axis(ax, indices, names)
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncols=len(classes), frameon=False, fontsize=8)
        return _svg(fig, salt + "classes")


def change_chart(indices: Sequence[int], names: Sequence[str], base_pct: Sequence[float],
                 new_pct: Sequence[float], leaky: Sequence[bool], salt: str) -> str:
    """Per matched site the change of dead % (bars, pp) and the base -> new values (markers)."""
    mpl = matplotlib()
    with mpl.rc_context(_RC):
        fig, ax = _figure(3.2)
        delta = [n - b for b, n in zip(base_pct, new_pct)]
        colours = [GREY if lk else (RED if d > 0 else GREEN) for d, lk in zip(delta, leaky)]
        _bars(ax, delta, colours, [f"change-{i}" for i in indices], leaky)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel("change of dead % (pp)")
        top = max([abs(d) for d in delta] + [5.0])
        ax.set_ylim(-top * 1.15, top * 1.15)
        _site_axis(ax, indices, names)
        return _svg(fig, salt + "change")


def timeline_lines(steps: Sequence[int], series: Sequence[tuple[str, Sequence[float]]], model: Sequence[float],
                   salt: str) -> str:
    """The model's dead % over the steps (thick) and the sites with the most dead at the end."""
    mpl = matplotlib()
    with mpl.rc_context(_RC):
        fig, ax = _figure(3.0)
        ax.plot(steps, model, color="black", linewidth=2.2, label="model (ReLU-type sites)", marker="o", markersize=3)
        for name, values in series:
            ax.plot(steps, values, linewidth=1.2, marker=".", markersize=4, label=shorten_middle(name, 40))
        ax.set_ylim(0, 100)
        ax.set_xlabel("step")
        ax.set_ylabel("dead neurons (%)")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8)
        return _svg(fig, salt + "lines")


def heatmap(steps: Sequence[int], names: Sequence[str], matrix: Any, salt: str) -> str:
    """Sites (rows, execution order) x points (columns), colour = dead %; drawn as one image."""
    mpl = matplotlib()
    with mpl.rc_context(_RC):
        rows = len(names)
        fig, ax = _figure(min(1.2 + 0.16 * rows, 9.0))
        image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="Reds", vmin=0, vmax=100)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=15))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: str(steps[int(x)]) if 0 <= x < len(steps) else ""))
        if rows <= 50:
            ax.set_yticks(range(rows))
            ax.set_yticklabels([shorten_middle(n, 36) for n in names], fontsize=7)
        else:
            ax.set_ylabel("site (execution order)")
        ax.set_xlabel("step")
        fig.colorbar(image, ax=ax, label="dead %", fraction=0.03, pad=0.01)
        return _svg(fig, salt + "heat")
