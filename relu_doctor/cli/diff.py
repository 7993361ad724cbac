"""relu-doctor diff: per-site change between two reports (SPEC 11)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_GATE, EXIT_OK, emit, run_guarded, stdout_console, warn
from .options import FAIL_INCREASE, REPORT_OUTPUT, RUN, SELECT, Options, report_format, takes

EXAMPLES = """\b
Examples:
  relu-doctor diff base.json new.json
  relu-doctor diff base.json new.json --fail-increase 2 -o diff.md
"""


class DiffFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


@takes((FAIL_INCREASE,), (report_format(DiffFormat, DiffFormat.table), REPORT_OUTPUT), SELECT, RUN)
def diff(
    base: Path = typer.Argument(
        ..., metavar="BASE.json", help="Baseline JSON report (relu-doctor scan --format json)."
    ),
    new: Path = typer.Argument(..., metavar="NEW.json", help="New JSON report of the same or a changed model."),
    *,
    opts: Options,
) -> None:
    """Per-site change of dead ratio, sparsity and dormant counts from BASE to NEW (sites matched by name)."""

    def body() -> int:
        from ..compare import check_increase
        from ..compare import diff as compare
        from ..render.diff import render_diff, render_diff_table
        from ..render.formats import format_for
        from ..report import Report
        from .baseline import diff_failed

        check_increase(opts.fail_increase)
        fmt = format_for(opts.output, opts.format, "table", [f.value for f in DiffFormat])
        base_report, new_report = Report.load(base), Report.load(new)
        d = compare(base_report, new_report, opts.fail_increase, opts.select, opts.ignore)
        d.base["report"], d.new["report"] = str(base), str(new)
        warn(d.warnings, opts.quiet)
        if fmt == "table" and opts.output is None:
            render_diff_table(d, stdout_console())
        else:
            emit(render_diff(d, fmt, new_report), opts.output, protected=[base, new])
        if not d.passed:
            diff_failed(d)
            return EXIT_GATE
        return EXIT_OK

    run_guarded(opts.debug, body)
