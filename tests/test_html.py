"""The HTML pages without a browser: structure, escaping, nothing fetched, size, numbers, missing extra.

The page is parsed with the standard library's HTML parser: a hostile site name that
escaped its text would show up here as a tag or an attribute.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import sys
from html.parser import HTMLParser

import pytest

from relu_doctor.compare import diff
from relu_doctor.errors import UserError
from relu_doctor.neurons import CLASSES, neuron_classes
from relu_doctor.render.html import render_diff_html, render_timeline_html
from tests.html_cases import HOSTILE, big_report, timeline


class Page(HTMLParser):
    """Every tag with its attributes, and the text of <script> and <td> elements."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "td"):
            self._in = tag
            (self.scripts if tag == "script" else self.cells).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "td":
            self.cells[-1] += data

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def ids(self, prefix: str) -> list[str]:
        return [a["id"] or "" for _, a in self.tags if (a.get("id") or "").startswith(prefix)]


ALLOWED_TAGS = {"html", "head", "meta", "title", "body", "div", "style", "script", "h1", "h2", "p", "span", "b",
                "ul", "li", "details", "summary",
                "figure", "figcaption", "table", "thead", "tbody", "tr", "th", "td", "input", "footer",
                # matplotlib's SVG
                "svg", "g", "path", "defs", "clippath", "rect", "text", "use", "image", "metadata", "pattern",
                "polyline", "line", "lineargradient", "stop", "tspan", "rdf:rdf", "cc:work", "dc:type",
                "dc:date", "dc:format", "dc:creator", "dc:title", "cc:agent"}


def assert_offline_and_escaped(text: str, scripts: int = 1) -> Page:
    page = Page(text)
    assert {t for t, _ in page.tags} <= ALLOWED_TAGS, {t for t, _ in page.tags} - ALLOWED_TAGS
    assert page.count("script") == scripts
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)  # no event handler attributes anywhere
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster") and value:
                assert value.startswith(("data:", "#")), (tag, name, value[:60])  # nothing fetched
    assert "@import" not in text and "url(http" not in text
    return page


def test_scan_page_escapes_hostile_names_and_fetches_nothing() -> None:
    report = big_report(12, 16)
    text = report.to_html()
    page = assert_offline_and_escaped(text)
    for name in HOSTILE:
        assert name in page.cells  # shown exactly as written, as text
    assert "<b>model</b>" not in text and "&lt;b&gt;model&lt;/b&gt;" in text
    # the x axis labels of a small model are the names, as SVG text (escaped by matplotlib)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text or "&lt;script&gt;alert(\"x\")" in text


def test_csp_forbids_fetches_and_pins_the_one_script() -> None:
    text = big_report(3, 8).to_html()
    page = Page(text)
    policy = next(a["content"] for t, a in page.tags
                  if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert policy is not None and "default-src 'none'" in policy
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


@pytest.mark.parametrize(("sites", "neurons"), [(4, 8), (120, 64)])
def test_one_bar_per_site_and_the_numbers_of_the_report(sites: int, neurons: int) -> None:
    report = big_report(sites, neurons)
    page = Page(report.to_html())
    assert page.ids("dead-") == [f"dead-{i}" for i in range(sites)]
    rows = [a for t, a in page.tags if t == "tr" and "data-i" in a and "data-tip" in a]
    assert [r["data-name"] for r in rows] == [s.name for s in report.sites]
    for s in report.sites:  # site i has i % 11 planted dead neurons and 2 rarely active ones
        assert s.dead == s.index % 11
        assert neuron_classes(s)["dead"] == s.dead and neuron_classes(s)["rarely active"] == 2
        assert sum(neuron_classes(s).values()) == neurons


def test_neuron_classes_are_disjoint_and_follow_the_definitions() -> None:
    report = big_report(1, 10)
    c = report.sites[0].counters
    c.fires[:] = [0, 0, 1, 399, 400, 400, 50, 50, 50, 3]  # of 400 rows: dead x2, rarely (<4) x2, always on x2
    report.sites[0].__dict__.pop("metrics", None)
    got = neuron_classes(report.sites[0])
    assert got == {"dead": 2, "rarely active": 2, "healthy": 4, "always on": 2, "saturated": 0}
    assert tuple(got) == CLASSES


def test_relu6_saturated_neurons_count_once() -> None:
    import numpy as np

    report = big_report(1, 4)
    site = report.sites[0]
    site.kind, site.params = "relu6", {}
    site.counters.fires[:] = [0, 400, 400, 200]
    site.counters.min = np.array([-1.0, 6.0, 2.0, -1.0])
    assert neuron_classes(site) == {"dead": 1, "rarely active": 0, "healthy": 1, "always on": 1, "saturated": 1}


def test_a_large_model_stays_small() -> None:
    report = big_report(500, 200)  # 100k neurons
    text = report.to_html()
    assert len(text.encode()) < 2_000_000
    page = Page(text)
    assert len(page.ids("dead-")) == 500


def test_jupyter_gets_a_scoped_fragment() -> None:
    report = big_report(3, 8)
    fragment = report._repr_html_()
    assert not fragment.startswith("<!doctype") and "<html" not in fragment
    assert re.match(r'<div class="rd" id="rd-[0-9a-f]{12}">', fragment)
    assert all(rule.strip().startswith(".rd") for rule in re.findall(r"(?:^|})([^{}]+){", fragment.split("<style>")[1]
                                                                            .split("</style>")[0]) if rule.strip())


def test_diff_page_has_a_bar_per_matched_site_and_escapes() -> None:
    base, new = big_report(30, 16, seed=0), big_report(30, 16, seed=0)
    new.sites[3].counters.fires[5:8] = 0  # three more dead neurons in site 3
    d = diff(base, new)
    text = render_diff_html(d, new)
    page = assert_offline_and_escaped(text)
    assert page.ids("change-") == [f"change-{i}" for i in range(30)]
    assert len(page.ids("dead-")) == 30  # the new scan follows
    row = next(a for t, a in page.tags if t == "tr" and a.get("data-name") == new.sites[3].name and "data-tip" in a)
    assert "+18.8 pp" in (row["data-tip"] or "")  # 3 of 16 neurons


def test_timeline_page_from_its_json() -> None:
    tl = timeline(20, 12)
    text = render_timeline_html(tl)
    page = assert_offline_and_escaped(text)
    assert len(page.ids("dead-")) == 20
    assert page.count("image") >= 1  # the heatmap, one embedded image
    tl["sites"][0]["died_at"]["63"] = 0  # dead from the first point on: not a death during the run
    text = render_timeline_html(tl)
    died = sum(len(s["died_at"]) for s in tl["sites"]) - 1
    assert f"<b class=\"\">{died}</b><span>died during the run</span>" in text


def test_empty_inputs_render() -> None:
    assert "No ReLU-family activation" in big_report(0, 4).to_html()
    assert "Nothing measured" in render_timeline_html({"points": [], "sites": []})


def test_missing_matplotlib_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(UserError, match="needs matplotlib, which is not installed") as e:
        big_report(2, 4).to_html()
    assert "relu-doctor[html]" in (e.value.hint or "")



def test_timeline_page_lists_the_gate_and_sites_missing_at_first() -> None:
    tl = timeline(6, 8, fail_new_dead=5)  # sites 1 and 5 lose 4 and 7 of 64 neurons
    tl["sites"][5]["dead_ratio"][:3] = [None, None, None]  # a site that ran only from the 4th point
    text = render_timeline_html(tl)
    page = assert_offline_and_escaped(text)
    failed = [v["site"] for v in tl["gates"]["violations"]]
    assert failed == [tl["sites"][1]["name"], tl["sites"][5]["name"]] and "FAILED" in text
    for name in failed:
        assert f"site {html.escape(name)}: " in text
    row = next(a for t, a in page.tags if t == "tr" and a.get("data-name") == tl["sites"][5]["name"])
    start = 100 * tl["sites"][5]["dead_ratio"][3]
    assert (row["data-tip"] or "").split(": ", 1)[1].startswith(f"{start:.1f}%")  # first measured point
    assert "nan" not in text.lower().replace("nanmax", "")


def test_many_gate_violations_are_folded() -> None:
    tl = timeline(40, 8, fail_new_dead=5)
    text = render_timeline_html(tl)
    page = assert_offline_and_escaped(text)
    violations = tl["gates"]["violations"]
    assert len(violations) > 10 and page.count("details") == 1
    assert f"<summary>{len(violations) - 10} more sites</summary>" in text
    assert sum(text.count(f"site {html.escape(v['site'])}: ") for v in violations) == len(violations)


def test_scan_gates_and_their_violations() -> None:
    from relu_doctor.gates import regate

    report = big_report(40, 16)
    report.gates = regate(report.sites, (), (), {"fail_dead_ratio": 0.3})  # sites with 5+ of 16 dead
    text = report.to_html()
    page = assert_offline_and_escaped(text)
    failing = [s for s in report.sites if s.grad_blocked and s.dead_ratio > 0.3]
    assert len(report.gates.violations) == len(failing) > 10 and page.count("details") == 1
    assert "FAILED" in text and "gate 30%" in text  # the threshold drawn on the chart
    for v in report.gates.violations:
        assert html.escape(v.describe()) in text
