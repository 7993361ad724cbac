"""The frame of every HTML page: escaping, the stylesheet, the small filter script, the document.

A page is a fragment (`<div class="rd" id=...>`: styles scoped to it, script bound to
its id) so that Jupyter can show several reports in one notebook; `document()` wraps it
into a standalone file whose Content-Security-Policy forbids every fetch and allows
only this module's own script (by hash): even a name that slipped past escaping could
neither load anything nor run.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable

STYLE = """
.rd{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c2833;max-width:1180px;
  margin:0 auto;padding:8px 16px}
.rd h1{font-size:20px;margin:8px 0 4px}.rd h2{font-size:16px;margin:22px 0 6px}
.rd .sub{color:#5d6d7e;margin:0 0 10px;overflow-wrap:anywhere}
.rd .cards{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.rd .card{border:1px solid #d5dbdb;border-radius:6px;padding:6px 12px;min-width:110px}
.rd .card b{display:block;font-size:18px}.rd .card span{color:#5d6d7e;font-size:12px}
.rd .pass{color:#1e8449;font-weight:600}.rd .fail{color:#c0392b;font-weight:600}
.rd .warn{background:#fef9e7;border-left:3px solid #f1c40f;padding:4px 8px;margin:4px 0}
.rd figure{margin:6px 0 14px}.rd figure svg{width:100%;height:auto;display:block}
.rd figure [id^="dead-"],.rd figure [id^="change-"]{cursor:pointer}
.rd .dim{opacity:.12}.rd .hit path{stroke:#000;stroke-width:1.5}
.rd table{border-collapse:collapse;width:100%;font-size:13px}
.rd th,.rd td{padding:3px 8px;border-bottom:1px solid #eaeded;text-align:right;vertical-align:top}
.rd th{position:sticky;top:0;background:#f4f6f6;cursor:pointer;user-select:none}
.rd td.n,.rd th.n{text-align:left;overflow-wrap:anywhere;max-width:420px}
.rd td.idx{font-family:ui-monospace,monospace;font-size:12px;text-align:left;overflow-wrap:anywhere;
  max-width:520px}
.rd tr.flash td{background:#fdebd0}.rd .scroll{max-height:70vh;overflow:auto;border:1px solid #eaeded}
.rd .tools{display:flex;gap:10px;align-items:center;margin:6px 0}
.rd .tools input{font:inherit;padding:4px 8px;width:min(420px,60vw)}
.rd .tip{position:fixed;pointer-events:none;background:#1c2833;color:#fff;padding:4px 8px;border-radius:4px;
  font-size:12px;max-width:420px;overflow-wrap:anywhere;display:none;z-index:9}
.rd .leaky{color:#5d6d7e}.rd .key{display:inline-block;width:10px;height:10px;margin-right:4px}
.rd footer{color:#85929e;font-size:12px;margin:20px 0 6px}
"""

# Filter rows and bars by site name, sort tables, link bars to rows. No library, no fetch.
SCRIPT = """
(function(){
var root=document.getElementById(%(root)s);if(!root)return;
var rows=[].slice.call(root.querySelectorAll("tr[data-name]"));
var bars={};[].forEach.call(root.querySelectorAll('figure [id^="dead-"],figure [id^="change-"]'),function(b){
  var i=b.id.slice(b.id.indexOf("-")+1);(bars[i]=bars[i]||[]).push(b);});
var byIndex={};rows.forEach(function(r){if(!byIndex[r.dataset.i])byIndex[r.dataset.i]=r;});
var input=root.querySelector(".rd-filter"),count=root.querySelector(".rd-count"),tip=root.querySelector(".tip");
var timer=null;
function apply(){var q=input.value.trim().toLowerCase(),shown={},n=0;
  rows.forEach(function(r){var ok=!q||r.dataset.name.toLowerCase().indexOf(q)>=0;r.hidden=!ok;
    if(ok&&!(r.dataset.i in shown)){shown[r.dataset.i]=1;n++;}});
  Object.keys(bars).forEach(function(i){bars[i].forEach(function(b){b.classList.toggle("dim",!!q&&!(i in shown));});});
  if(count)count.textContent=q?(Object.keys(shown).length+" matching sites"):"";}
if(input)input.addEventListener("input",function(){clearTimeout(timer);timer=setTimeout(apply,120);});
Object.keys(bars).forEach(function(i){var r=byIndex[i];if(!r)return;bars[i].forEach(function(b){
  b.addEventListener("mousemove",function(e){tip.textContent=r.dataset.tip||r.dataset.name;
    tip.style.display="block";tip.style.left=(e.clientX+12)+"px";tip.style.top=(e.clientY+12)+"px";});
  b.addEventListener("mouseleave",function(){tip.style.display="none";});
  b.addEventListener("click",function(){r.hidden=false;r.scrollIntoView({block:"center"});
    r.classList.add("flash");setTimeout(function(){r.classList.remove("flash");},1500);});});});
[].forEach.call(root.querySelectorAll("table.sortable th"),function(th,col){th.addEventListener("click",function(){
  var body=th.closest("table").tBodies[0],list=[].slice.call(body.rows),dir=th.dataset.dir==="1"?-1:1;
  th.dataset.dir=dir===1?"1":"-1";
  list.sort(function(a,b){var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
    if(x!==undefined&&y!==undefined)return dir*(parseFloat(x)-parseFloat(y));
    return dir*a.cells[col].textContent.localeCompare(b.cells[col].textContent);});
  var f=document.createDocumentFragment();list.forEach(function(r){f.appendChild(r);});body.appendChild(f);});});
})();
"""


def esc(value: object) -> str:
    """Text for an element or a quoted attribute: <, >, &, " and ' escaped."""
    return html.escape(str(value), quote=True)


def root_id(salt: str) -> str:
    return "rd-" + hashlib.sha256(salt.encode()).hexdigest()[:12]


def _script(root: str) -> str:
    return SCRIPT % {"root": '"' + root + '"'}


def fragment(root: str, body: Iterable[str]) -> str:
    """The page's content, scoped to `root`: for Jupyter, and the inside of `document()`."""
    return (f'<div class="rd" id="{root}"><style>{STYLE}</style>' + "".join(body)
            + f'<div class="tip"></div><script>{_script(root)}</script></div>')


def document(title: str, root: str, body: Iterable[str]) -> str:
    """A standalone, offline HTML file."""
    digest = base64.b64encode(hashlib.sha256(_script(root).encode()).digest()).decode()
    policy = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
              "img-src data:; base-uri 'none'; form-action 'none'")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title></head><body>{fragment(root, body)}</body></html>\n")


def card(value: str, label: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{esc(value)}</b><span>{esc(label)}</span></div>'


def filter_box(placeholder: str = "filter sites by name") -> str:
    return (f'<div class="tools"><input class="rd-filter" type="search" placeholder="{esc(placeholder)}" '
            'aria-label="filter sites by name"><span class="rd-count"></span></div>')


def figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption class=\"sub\">{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def table(headers: Iterable[tuple[str, str]], rows: Iterable[str], cls: str = "sortable") -> str:
    """`headers`: (label, css class); `rows`: ready <tr> strings."""
    head = "".join(f'<th class="{c}">{esc(h)}</th>' for h, c in headers)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}' \
           "</tbody></table></div>"


def cell(text: object, value: float | int | None = None, cls: str = "") -> str:
    v = "" if value is None else f' data-v="{value!r}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}{v}>{esc(text)}</td>"
