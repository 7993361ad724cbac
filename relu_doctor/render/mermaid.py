"""A Mermaid xychart of dead % per site, which GitHub draws inside Markdown.

Site names are hostile input and Mermaid has its own syntax (quotes end a label, `;` ends
a statement, `#...;` is an entity, `%%` a comment, `<` may be read as HTML): labels keep
only characters that mean nothing to Mermaid and are shortened, so no name can break or
escape the chart. Leaky kinds are marked with `*` (their dead neurons still pass gradient).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .text import shorten_middle

if TYPE_CHECKING:
    from ..report import Site

MAX_SITES = 100  # more bars than this are unreadable in a PR comment: the worst are charted
LABEL_WIDTH = 24
NAME_LABELS = 30  # beyond this many bars, site numbers label the axis instead of names
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/+# -]")


def safe_label(text: str) -> str:
    """`text` with every character Mermaid could read as syntax replaced, shortened."""
    cleaned = _UNSAFE.sub("_", text)  # `#` stays (relu#2): without `;` it cannot start an entity
    return shorten_middle(cleaned, LABEL_WIDTH).replace("…", "..")


def _chosen(sites: list[Site]) -> tuple[list[Site], str]:
    if len(sites) <= MAX_SITES:
        return sites, f"Dead % per site ({len(sites)} sites, execution order)"
    worst = sorted(sites, key=lambda s: (-s.dead_ratio, s.index))[:MAX_SITES]
    return sorted(worst, key=lambda s: s.index), (f"Dead % of the {MAX_SITES} sites with most dead, "
                                                   f"of {len(sites)} (execution order)")


def mermaid_dead_chart(sites: list[Site]) -> list[str]:
    """A fenced ```mermaid block (as lines), or nothing when there is no site."""
    if not sites:
        return []
    shown, title = _chosen(sites)
    if len(shown) <= NAME_LABELS:
        labels = [safe_label(s.name) + ("" if s.grad_blocked else "*") for s in shown]
    else:
        labels = [f"{s.index}{'' if s.grad_blocked else '*'}" for s in shown]
    values = [f"{100 * s.dead_ratio:.1f}" for s in shown]
    quoted = ", ".join(f'"{label}"' for label in labels)
    lines = ["```mermaid", "xychart-beta", f'    title "{title}"', f"    x-axis [{quoted}]",
             '    y-axis "dead %" 0 --> 100', f"    bar [{', '.join(values)}]", "```"]
    if any(not s.grad_blocked for s in shown):
        lines.append("\\* leaky kind: its dead neurons still pass gradient.")
    return lines
