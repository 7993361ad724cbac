"""A report in any output format, as text: the one place that maps a format name to its renderer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from .text import plain_text

if TYPE_CHECKING:
    from ..report import Report

REPORT_FORMATS = ("table", "json", "markdown", "csv", "html")


def render_report(report: Report, fmt: str, width: int = 80) -> str:
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
    return plain_text(lambda console: print_report(report, console), width)


def print_report(report: Report, console: Console) -> None:
    """The Rich table and summary, on a console (a terminal: colour and its width)."""
    from .table import render_table

    render_table(report, console)
