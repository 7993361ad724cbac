"""The HTML report's chart library, chosen by measurement: matplotlib SVG vs altair + vl-convert.

For N sites, the same two charts (dead % per site; five neuron classes stacked per site)
and a site x time heatmap (N x 50), each drawn by both libraries as SVG: bytes and seconds.
Then the chosen renderer's whole page (relu_doctor.render.html) for scans of N sites.

    .venv/bin/python benchmarks/html_charts.py            # needs altair and vl-convert-python
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def matplotlib_charts(dead: np.ndarray, leaky: np.ndarray, classes: np.ndarray, heat: np.ndarray) -> tuple[int, int]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    top, bottom_ax = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(dead))
    top.bar(x, 100 * dead, color=np.where(leaky, "#9aa5b1", "#c0392b"))
    bottom = np.zeros(len(dead))
    for k in range(classes.shape[1]):
        bottom_ax.bar(x, classes[:, k], bottom=bottom, width=1.0, linewidth=0)
        bottom += classes[:, k]
    bars = io.StringIO()
    fig.savefig(bars, format="svg")
    fig = Figure(figsize=(10, 8))
    fig.add_subplot().imshow(heat, aspect="auto", interpolation="nearest", cmap="Reds")
    heatmap = io.StringIO()
    fig.savefig(heatmap, format="svg")
    return len(bars.getvalue()), len(heatmap.getvalue())


def altair_charts(dead: np.ndarray, leaky: np.ndarray, classes: np.ndarray, heat: np.ndarray) -> tuple[int, int]:
    import altair as alt
    import vl_convert as vlc

    rows = [{"i": i, "dead": float(dead[i]), "leaky": bool(leaky[i])} for i in range(len(dead))]
    stacked = [{"i": i, "cls": k, "v": float(classes[i, k])} for i in range(len(dead)) for k in range(classes.shape[1])]
    chart = alt.vconcat(
        alt.Chart(alt.Data(values=rows)).mark_bar().encode(x="i:O", y="dead:Q", color="leaky:N").properties(width=1100),
        alt.Chart(alt.Data(values=stacked)).mark_bar().encode(x="i:O", y=alt.Y("v:Q", stack="normalize"),
                                                              color="cls:N").properties(width=1100))
    cells = [{"s": i, "t": j, "v": float(heat[i, j])} for i in range(heat.shape[0]) for j in range(heat.shape[1])]
    heatmap = alt.Chart(alt.Data(values=cells)).mark_rect().encode(x="t:O", y="s:O", color="v:Q")
    return len(vlc.vegalite_to_svg(chart.to_dict())), len(vlc.vegalite_to_svg(heatmap.to_dict()))


def timed(f, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - start


def main() -> None:
    rng = np.random.default_rng(0)
    print("sites  library     bars+classes KB  heatmap KB  seconds")
    for n in (50, 500):
        data = (rng.random(n) ** 3, rng.random(n) < 0.1, rng.dirichlet(np.ones(5), n), rng.random((n, 50)))
        for name, f in (("matplotlib", matplotlib_charts), ("altair", altair_charts)):
            try:
                (bars, heat), seconds = timed(f, *data)
            except ImportError as e:
                print(f"{n:5}  {name:10}  not installed ({e.name})")
                continue
            print(f"{n:5}  {name:10}  {bars // 1024:15}  {heat // 1024:10}  {seconds:7.2f}")
    from relu_doctor.render.html import render_timeline_html
    from tests.html_cases import big_report, timeline

    print("\nwhole pages (relu_doctor.render.html)")
    for n, c in ((4, 32), (120, 64), (500, 200)):
        text, seconds = timed(lambda report: report.to_html(), big_report(n, c))
        print(f"scan of {n} sites x {c} neurons: {len(text.encode()) // 1024} KB, {seconds:.2f} s")
    text, seconds = timed(lambda: render_timeline_html(timeline(500, 50)))
    print(f"timeline of 500 sites x 50 points: {len(text.encode()) // 1024} KB, {seconds:.2f} s")


if __name__ == "__main__":
    main()
