"""A report in any output format, as text: the one place that maps a format name to its renderer,
and an output file's extension to a format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .text import plain_text

if TYPE_CHECKING:
    from ..report import Report
    from .table import Rows

REPORT_FORMATS = ("table", "json", "markdown", "csv", "html")
# -o FILE's extension names its format unless --format says (SPEC 6)
EXTENSIONS = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".html": "html",
              ".htm": "html", ".txt": "table"}


def format_for(output: Path | None, given: str | None, default: str, choices: Sequence[str]) -> str:
    """--format when given; else what -o's extension names; else `default`.

    An extension naming a format this command cannot write is refused, so `diff -o d.csv`
    never writes a table into a .csv file.
    """
    from ..errors import UserError

    if given is not None:
        return given
    named = EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    if named is None:
        return default
    if named not in choices:
        raise UserError(f"-o {output} names {named}, which this command does not write",
                        f"Pass --format ({', '.join(choices)}), or another -o extension.")
    return named


def render_report(report: Report, fmt: str, width: int = 80, rows: Rows | None = None) -> str:
    """The report as `fmt` text; the table as plain text of `width` columns."""
    if fmt == "json":
        return report.to_json()
    if fmt == "markdown":
        from .markdown import render_markdown

        return render_markdown(report)
    if fmt == "csv":
        from .csv import render_csv

        return render_csv(report)
    if fmt == "html":
        from .html import render_html

        return render_html(report)
    if fmt != "table":
        raise ValueError(f"unknown report format {fmt!r}")
    return plain_text(lambda console: print_report(report, console, rows), width)


def print_report(report: Report, console: Console, rows: Rows | None = None) -> None:
    """The Rich table and summary, on a console (a terminal: colour and its width)."""
    from .table import render_table

    render_table(report, console, rows)
