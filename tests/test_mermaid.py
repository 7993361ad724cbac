"""The Mermaid chart in Markdown: one bar per site, safe labels, worst sites of a big model."""

from __future__ import annotations

import re

from relu_doctor.render.markdown import render_markdown
from relu_doctor.render.mermaid import MAX_SITES, NAME_LABELS, safe_label
from tests.test_markdown_csv import make_report


def chart(md: str) -> dict[str, str]:
    block = md.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    lines = block.splitlines()
    assert lines[0] == "xychart-beta"
    return {line.split()[0]: line.strip() for line in lines[1:]}


def bars(md: str) -> list[float]:
    return [float(v) for v in re.findall(r"[\d.]+", chart(md)["bar"].removeprefix("bar"))]


def labels(md: str) -> list[str]:
    return re.findall(r'"([^"]*)"', chart(md)["x-axis"])


def test_one_bar_per_site_in_execution_order_and_the_table_stays() -> None:
    md = render_markdown(make_report([1, 4, 0]))  # 8 neurons per site
    assert bars(md) == [12.5, 50.0, 0.0]
    assert labels(md) == ["layer0.relu", "layer1.relu", "layer2.relu"]
    assert "| 1 | `layer1.relu` | relu | 8 | 4 | 50.0% |" in md  # the text table is still there
    assert md.index("```mermaid") < md.index("| # | site |")


def test_hostile_names_cannot_break_out_of_the_chart() -> None:
    hostile = ['a"] \nbar [1', "x;%%y", "<script>alert(1)</script>", "#quot;", "`~!@$^&*()={}|\\"]
    md = render_markdown(make_report([0] * len(hostile), names=hostile))
    got = labels(md)
    assert len(got) == len(hostile)
    for label in got:
        assert re.fullmatch(r"[A-Za-z0-9_.:/+# -]*", label.replace("..", "")), label
    assert len(chart(md)) == 4  # title, x-axis, y-axis, bar: nothing injected
    assert safe_label("layer1.0.relu#2") == "layer1.0.relu#2"  # ordinary names are kept as they are


def test_leaky_kinds_are_marked() -> None:
    report = make_report([1, 2])
    report.sites[1].kind = "leaky_relu"
    md = render_markdown(report)
    assert labels(md) == ["layer0.relu", "layer1.relu*"]
    assert "leaky kind" in md


def test_a_big_model_charts_its_worst_sites_by_number() -> None:
    dead = [i % 5 for i in range(MAX_SITES + 50)]
    md = render_markdown(make_report(dead))
    shown = labels(md)
    assert len(shown) == MAX_SITES == len(bars(md)) and len(shown) > NAME_LABELS
    # the 100 worst of 150 sites (30 each with 0..4 of 8 dead): all with 2, 3 or 4 dead, 10 with 1
    assert sorted(bars(md)) == [12.5] * 10 + [25.0] * 30 + [37.5] * 30 + [50.0] * 30
    assert [int(s) for s in shown] == sorted(int(s) for s in shown)  # execution order


def test_no_chart_without_sites() -> None:
    assert "mermaid" not in render_markdown(make_report([]))
