"""Small text helpers shared by the renderers."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ..report import Report


def shorten_middle(name: str, width: int) -> str:
    """'layer4.1.downsample.relu' -> 'layer4…sample.relu': keep both ends, which say the most."""
    if len(name) <= width:
        return name
    if width <= 1:
        return name[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{name[:head]}…{name[len(name) - tail:]}"


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def plain_text(draw: Callable[[Console], None], width: int = 80) -> str:
    """What `draw` prints on a Rich console, as plain text of `width` columns (for files and pipes)."""
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, file=sink, force_terminal=False)
        draw(console)
    return console.export_text(styles=False)


_PARTS = re.compile(r"([./#_])")


def _render(parts: list[str], keep: set[int], cut: dict[int, int] | None = None) -> str:
    """The name with the parts not in `keep` (and the separators around them) elided to `…`.

    `cut[i]` keeps only the last characters of part i (its distinguishing end: `…block1`).
    """
    out: list[str] = []
    previous = -1
    for i in sorted(keep):
        text = parts[2 * i]
        trimmed = cut is not None and i in cut and cut[i] < len(text)
        if i != previous + 1 or (previous < 0 and i > 0):
            out.append("…")
        elif previous >= 0:
            out.append(parts[2 * i - 1])  # the separator between two kept neighbours
            if trimmed:
                out.append("…")
        elif trimmed:
            out.append("…")
        out.append(text[len(text) - cut[i]:] if trimmed and cut is not None else text)
        previous = i
    if previous != len(parts) // 2:
        out.append("…")
    return "".join(out)


def _fit(parts: list[str], keep: set[int], width: int) -> str:
    """Cut the longest kept parts (never the last) from the left until the name fits."""
    last = len(parts) // 2
    cut = {i: len(parts[2 * i]) for i in keep if i != last}
    text = _render(parts, keep, cut)
    while len(text) > width and cut:
        longest = max(cut, key=lambda i: (cut[i], -i))
        if cut[longest] <= 2:
            break
        cut[longest] -= 1
        text = _render(parts, keep, cut)
    return text if len(text) <= width else shorten_middle(text, width)


def shorten_names(names: list[str], width: int) -> dict[str, str]:
    """Each name in at most `width` characters, keeping what tells the names apart.

    A name that fits stays whole. A longer one keeps its last part (`relu2`), then the parts
    where it differs from the names it would otherwise read the same as (`denseblock1` vs
    `denseblock2`: the distinguishing middle), then as many parts next to its end, then from
    its start, as fit; the rest becomes `…`. Parts are split at `.`, `/`, `#` and `_`.
    """
    split = {n: _PARTS.split(n) for n in names}
    long = sorted(n for n in set(names) if len(n) > width)
    keep = {n: {len(split[n]) // 2} for n in long}
    components = {n: split[n][0::2] for n in long}
    for _ in range(8):  # each round can only add parts; a few rounds settle any real model
        shown = {n: _render(split[n], keep[n]) for n in long}
        groups: dict[str, list[str]] = {}
        for n in long:
            groups.setdefault(shown[n], []).append(n)
        clashes = [g for g in groups.values() if len(g) > 1]
        clashes += [[n] for n in long if shown[n] in names and shown[n] != n]  # reads like another, whole name
        if not clashes:
            break
        for group in clashes:
            for n in group:
                for other in group:
                    if other != n:
                        a, b = components[n], components[other]
                        first = next((i for i in range(len(a)) if i >= len(b) or a[i] != b[i]), None)
                        if first is not None:
                            keep[n].add(first)
                if len(group) == 1:  # clashes with a whole name: show one part more
                    keep[n].add(min(set(range(len(components[n]))) - keep[n], default=0))
    out = {n: n for n in names}
    for n in long:
        count = len(components[n])
        for i in [*range(count - 2, -1, -1)]:  # parts next to the end first, then (by elimination) the start
            if i not in keep[n] and len(_render(split[n], keep[n] | {i})) <= width:
                keep[n].add(i)
            elif i < count - 2 and (i + 1) not in keep[n]:
                break
        for i in range(count):
            if i not in keep[n] and len(_render(split[n], keep[n] | {i})) <= width:
                keep[n].add(i)
            elif i not in keep[n]:
                break
        out[n] = _fit(split[n], keep[n], width)
    return out


def proof_line(report: Report) -> str | None:
    """One sentence on `scan --prove`'s answer, or None when the report holds no proofs."""
    proven = [x for x in report.sites if x.proof is not None]
    if not proven:
        return None
    blocked = [x for x in proven if x.grad_blocked]
    count = sum(x.proof.count for x in blocked)
    rules: dict[str, int] = {}
    for x in blocked:
        for r in x.proof.rules:
            rules[r] = rules.get(r, 0) + 1
    bounds = (report.settings.get("prove") or {}).get("input_range")
    where = f"inputs in [{bounds[0]:g}, {bounds[1]:g}]" if bounds else "any input"
    how = f" ({', '.join(f'{k} {v}' for k, v in sorted(rules.items()))})" if rules else ""
    neurons = sum(x.neurons for x in blocked)
    return f"{count} of {neurons} neurons in ReLU-type sites cannot fire on {where}{how}."
