"""The HTML pages in a real browser (headless Chromium, network blocked): they load without a
console error, fetch nothing, draw one bar per site, and the filter works.

Pages: the sample model's scan, the scan of a 120-site model built here, the diff of that
model against a copy with more dead neurons, and `relu-doctor timeline -o timeline.html`
of a watch history of that model. Screenshots land in pytest's tmp dir (the path is
printed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import relu_doctor as rd
from relu_doctor.cli import app
from relu_doctor.compare import diff
from relu_doctor.render.html import render_diff_html
from tests.browser import Chromium, find_chromium
from tests.html_cases import HOSTILE

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SITES = 120


class Deep(nn.Module):
    """120 residual Linear -> activation blocks; block i has i % 4 planted dead neurons
    (zero weight row, bias -1), every 10th activation is leaky."""

    def __init__(self, extra_dead: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lins = nn.ModuleList([nn.Linear(16, 16) for _ in range(SITES)])
        self.acts = nn.ModuleList([nn.LeakyReLU(0.01) if i % 10 == 9 else nn.ReLU() for i in range(SITES)])
        with torch.no_grad():
            for i, lin in enumerate(self.lins):
                lin.weight.mul_(0.5)
                lin.bias.fill_(0.5)
                dead = list(range(i % 4 + (extra_dead if i % 3 == 0 else 0)))
                lin.weight[dead] = 0.0
                lin.bias[dead] = -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, act in zip(self.lins, self.acts):
            x = x + act(lin(x)) * 0.1
        return x


@pytest.fixture(scope="module")
def browser() -> Any:
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium (.ci/run installs Debian's chromium package)")
    b = Chromium(exe)
    yield b
    b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """name -> (html file, number of per-site bars it must draw)."""
    folder = tmp_path_factory.mktemp("html")
    out: dict[str, tuple[Path, int]] = {}
    sample = rd.scan(ROOT / "sample_models" / "sample_cnn.pt", ROOT / "sample_models" / "sample_batch.npy")
    out["sample"] = (folder / "sample.html", len(sample.sites))
    out["sample"][0].write_text(sample.to_html())
    data = np.random.default_rng(0).standard_normal((64, 16), dtype=np.float32)
    base = rd.scan(Deep(), data)
    base.sites[0].name = HOSTILE[0]  # a hostile name in a real report too
    out["deep"] = (folder / "deep.html", SITES)
    out["deep"][0].write_text(base.to_html())
    new = rd.scan(Deep(extra_dead=2), data)
    new.sites[0].name = HOSTILE[0]
    out["diff"] = (folder / "diff.html", SITES)
    out["diff"][0].write_text(render_diff_html(diff(base, new), None))
    # a watch history of four windows, more neurons planted dead in each, through `relu-doctor timeline`
    lines = []
    for k in range(4):
        line = (base if k == 0 else rd.scan(Deep(extra_dead=k), data)).to_dict()
        line["sites"][0]["name"] = HOSTILE[0]
        line["sample"].update(source="training", steps=[100 * k, 100 * k + 9])
        lines.append(json.dumps(line) + "\n")
    history = folder / "history.jsonl"
    history.write_text("".join(lines))
    out["timeline"] = (folder / "timeline.html", SITES)
    result = CliRunner().invoke(app, ["timeline", str(history), "-o", str(out["timeline"][0]), "-q"])
    assert result.exit_code == 0, result.output
    return out


CHECK = """(() => {
  const figs = [...document.querySelectorAll('figure svg')];
  const bars = [...document.querySelectorAll('figure [id^="dead-"], figure [id^="change-"]')];
  const drawn = bars.filter(b => b.querySelector('path') && b.getBBox().width > 0);
  return {figs: figs.length,
          sized: figs.filter(s => { const r = s.getBoundingClientRect(); return r.width > 300 && r.height > 80; })
                     .length,
          bars: new Set(bars.map(b => b.id.replace(/^[a-z]+-/, ''))).size, drawn: drawn.length,
          scripts: document.scripts.length,
          injected: document.querySelectorAll('img, iframe, object, embed, link, base').length,
          rows: document.querySelectorAll('tr[data-name]').length};
})()"""

FILTER = """(async (q) => {
  const input = document.querySelector('.rd-filter');
  input.value = q; input.dispatchEvent(new Event('input'));
  await new Promise(r => setTimeout(r, 400));
  const shown = [...document.querySelectorAll('tr[data-name]')].filter(r => !r.hidden);
  return {sites: [...new Set(shown.map(r => r.dataset.name))].sort(),
          dimmed: document.querySelectorAll('figure .dim').length};
})(%s)"""


@pytest.mark.parametrize("name", ["sample", "deep", "diff", "timeline"])
def test_page_in_chromium(name: str, browser: Chromium, pages: dict[str, tuple[Path, int]], tmp_path: Path) -> None:
    path, sites = pages[name]
    url = path.as_uri()
    session, load = browser.open(url)
    assert load.errors == [], load.errors
    assert [u for u in load.requests if u != url and not u.startswith("data:")] == []  # nothing left the file
    got = browser.evaluate(session, CHECK)
    assert got["figs"] >= 1 and got["sized"] == got["figs"], got
    assert got["bars"] == sites and got["drawn"] == sites, got  # one bar per site, each drawn
    assert got["scripts"] == 1 and got["injected"] == 0, got
    shot = browser.screenshot(session, tmp_path / f"{name}.png", full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    if name in ("deep", "diff", "timeline"):
        filtered = browser.evaluate(session, FILTER % json.dumps("acts.11"))
        expected = sorted({f"acts.{i}" for i in range(SITES) if str(i).startswith("11")})
        assert filtered["sites"] == expected
        assert filtered["dimmed"] == sites - len(expected)
        hostile = browser.evaluate(session, FILTER % json.dumps(HOSTILE[0]))
        assert hostile["sites"] == [HOSTILE[0]]  # the name reads back exactly, as text


def test_the_harness_sees_fetches_and_errors(browser: Chromium, tmp_path: Path) -> None:
    """The checks above could fail: a page that fetches and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://example.com/x.png"><script>undefined_function()</script>'
                   '<script>console.error("boom")</script>')
    _, load = browser.open(bad.as_uri())
    assert "http://example.com/x.png" in load.requests
    assert any("undefined_function" in e for e in load.errors) and "boom" in load.errors


def test_two_reports_in_one_notebook_page_stay_apart(browser: Chromium, tmp_path: Path) -> None:
    """Jupyter puts `_repr_html_` fragments into one document: each one's filter is its own."""
    from tests.html_cases import big_report

    first, second = big_report(30, 8, seed=0), big_report(40, 8, seed=1)
    second.sites[7].name = "only.in.the.second"
    page = tmp_path / "notebook.html"
    cells = f"{first._repr_html_()}<p>cell 2</p>{second._repr_html_()}"
    page.write_text(f"<!doctype html><html><body>{cells}</body></html>")
    session, load = browser.open(page.as_uri())
    assert load.errors == [] and [u for u in load.requests if not u.startswith(("file:", "data:"))] == []
    got = browser.evaluate(session, """(async () => {
      const roots = [...document.querySelectorAll('div.rd')];
      const input = roots[1].querySelector('.rd-filter');
      input.value = 'only.in'; input.dispatchEvent(new Event('input'));
      await new Promise(r => setTimeout(r, 400));
      const shown = root => new Set([...root.querySelectorAll('tr[data-name]')].filter(r => !r.hidden)
                                     .map(r => r.dataset.i)).size;
      return {roots: roots.length, ids: roots.map(r => r.id), first: shown(roots[0]), second: shown(roots[1]),
              rows0: new Set([...roots[0].querySelectorAll('tr[data-name]')].map(r => r.dataset.i)).size,
              dimmed: roots.map(r => r.querySelectorAll('figure .dim').length)};
    })()""")
    assert got["roots"] == 2 and got["ids"][0] != got["ids"][1]
    assert got["first"] == got["rows0"] == 30  # the first report's sites all still shown
    assert got["second"] == 1 and got["dimmed"] == [0, 39]
