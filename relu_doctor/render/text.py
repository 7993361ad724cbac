"""Small text helpers shared by the renderers."""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.console import Console


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
