"""relu-doctor merge: partial scans of one model into the report of the whole sample (SPEC 11)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import EXIT_GATE, EXIT_OK, emit, gate_failed, run_guarded, stdout_console, warn
from .options import DISPLAY, GATES, REPORT_OUTPUT, RUN, Options, report_format, takes
from .scan import Format

EXAMPLES = """\b
Examples:
  relu-doctor merge part0.json part1.json part2.json part3.json -o report.json
  relu-doctor merge part*.json --fail-dead-ratio 0.25 -f table
"""


@takes((report_format(Format, Format.json), REPORT_OUTPUT), DISPLAY, GATES, RUN)
def merge(
    reports: list[Path] = typer.Argument(
        ..., metavar="REPORT.json", help="JSON reports of partial scans of the same model."
    ),
    *,
    opts: Options,
) -> None:
    """Combine partial scans (same model, same sites) into the report of the whole sample.

    The whole is judged by the --fail-* options given here, else by the gates the parts recorded.
    """

    def body() -> int:
        from ..errors import UserError
        from ..merge import merge_reports
        from ..render.formats import format_for, print_report, render_report
        from ..render.table import Rows
        from ..report import Report

        fmt = format_for(opts.output, opts.format, "json", [f.value for f in Format])
        gates = {k: v for k, v in opts.of(GATES).items() if v is not None}
        rows = Rows(opts.top, opts.only_dead)
        seen: dict[Path, Path] = {}
        for p in reports:
            if p.resolve() in seen:
                raise UserError(
                    f"{p} is given twice (as {seen[p.resolve()]})",
                    "Each partial scan counts once; pass every report file once.",
                )
            seen[p.resolve()] = p
        merged = merge_reports([Report.load(p) for p in reports], [str(p) for p in reports], gates or None)
        warn(merged.warnings, opts.quiet)
        if fmt == "table" and opts.output is None:
            print_report(merged, stdout_console(), rows)
        else:
            emit(render_report(merged, fmt, rows=rows), opts.output, protected=list(reports))
        if not merged.gates.passed:
            gate_failed(f"{len(merged.gates.violations)} violation(s)", [v.describe() for v in merged.gates.violations])
            return EXIT_GATE
        return EXIT_OK

    run_guarded(opts.debug, body)
