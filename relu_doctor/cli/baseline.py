"""`scan --baseline BASE.json`: scan, then diff against BASE in the same run (SPEC 11)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from .common import emit, gate_failed, stdout_console, warn

if TYPE_CHECKING:
    from ..compare import Diff
    from ..render.table import Rows
    from ..report import Report


def load_baseline(baseline: Path | None, fail_increase: float | None) -> Report | None:
    """Read BASE before the scan, so a wrong path or flag fails in a second, not after the scan."""
    from ..compare import check_increase
    from ..errors import UserError
    from ..report import Report

    if baseline is None:
        if fail_increase is not None:
            raise UserError(
                "--fail-increase needs --baseline BASE.json",
                "Pass the JSON report to compare with, or use `relu-doctor diff`.",
            )
        return None
    check_increase(fail_increase)
    return Report.load(baseline)


def diff_failed(d: Diff) -> None:
    gate_failed(f"{len(d.violations)} site(s) grew by more than {d.fail_increase:g} pp",
                [v.describe() for v in d.violations])


def emit_with_baseline(
    report: Report,
    base: Report,
    base_path: Path,
    fmt: str,
    output: Path | None,
    protected: list[Path],
    fail_increase: float | None,
    select: Sequence[str],
    ignore: Sequence[str],
    quiet: bool,
    rows: Rows | None = None,
) -> bool:
    """Emit the scan with its diff against BASE; True when the --fail-increase gate passed.

    Table and Markdown get the diff appended (one summary for a terminal or a PR), HTML is
    the diff's page with the scan's after it;
    JSON and CSV stay the report alone, so the diff goes to stderr as a table.
    """
    from ..compare import diff as compare
    from ..render.diff import render_diff, render_diff_table
    from ..render.formats import print_report, render_report

    d = compare(base, report, fail_increase, select, ignore)
    d.base["report"] = str(base_path)
    warn(d.warnings, quiet)
    inputs = protected + [base_path]
    if fmt == "table" and output is None:
        console = stdout_console()
        print_report(report, console, rows)
        console.print()
        console.rule("compared with the baseline", style="dim")
        render_diff_table(d, console)
    elif fmt in ("table", "markdown"):
        emit(render_report(report, fmt, rows=rows) + "\n" + render_diff(d, fmt), output, inputs)
    elif fmt == "html":  # one page: the diff, then the new scan
        emit(render_diff(d, fmt, report), output, inputs)
    else:
        emit(render_report(report, fmt), output, inputs)
        if not quiet:  # the diff is not data here: stderr, wrapped to the terminal like stdout's tables
            render_diff_table(d, Console(stderr=True, highlight=False))
    if not d.passed:
        diff_failed(d)
    return d.passed
