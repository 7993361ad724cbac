"""relu-doctor diff and merge: reports over time and across machines (SPEC 11).

Also the `scan --baseline` step: scan, then diff against BASE in the same run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from .cli import EXIT_GATE, EXIT_OK, Format, _say, _stderr, app, emit, print_table, render, run_guarded

if TYPE_CHECKING:
    from .compare import Diff
    from .report import Report


class DiffFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _text_of(draw: Callable[[Console], None]) -> str:
    """What `draw` prints, as plain 80-column text (for -o files and appending to other output)."""
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=80, file=sink, force_terminal=False)
        draw(console)
    return console.export_text(styles=False)


def _report_violations(lines: Sequence[str], title: str) -> None:
    _say("gate failed:", title, "bold red")
    for line in lines:
        _stderr().print(f"  {line}", highlight=False, markup=False)


def _warn(warnings: Sequence[str], quiet: bool) -> None:
    if not quiet:
        for w in warnings:
            _say("warning:", w, "yellow")


def _diff_violations(d: Diff) -> None:
    _report_violations(
        [v.describe() for v in d.violations], f"{len(d.violations)} site(s) grew by more than {d.fail_increase:g} pp"
    )


@app.command()
def diff(
    base: Path = typer.Argument(
        ..., metavar="BASE.json", help="Baseline JSON report (relu-doctor scan --format json)."
    ),
    new: Path = typer.Argument(..., metavar="NEW.json", help="New JSON report of the same or a changed model."),
    fail_increase: float | None = typer.Option(
        None,
        "--fail-increase",
        metavar="PP",
        help="Exit 1 if a ReLU-type site's dead ratio grew by more than PP percentage points.",
    ),
    fmt: DiffFormat = typer.Option(
        DiffFormat.table, "--format", "-f", metavar="FORMAT", help="table, json or markdown."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write the diff here instead of stdout."
    ),
    select: list[str] | None = typer.Option(
        None, "--select", metavar="GLOB", help="Glob of site names the gate counts."
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", metavar="GLOB", help="Glob of site names the gate skips."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No warnings."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Per-site change of dead ratio, sparsity and dormant counts from BASE to NEW (sites matched by name)."""

    def body() -> int:
        from .compare import check_increase
        from .compare import diff as compare
        from .report import Report

        check_increase(fail_increase)
        base_report, new_report = Report.load(base), Report.load(new)
        d = compare(base_report, new_report, fail_increase, select or (), ignore or ())
        d.base["report"], d.new["report"] = str(base), str(new)
        _warn(d.warnings, quiet)
        if fmt is DiffFormat.table and output is None:
            _print_diff(d, Console(highlight=False))
        else:
            emit(_render_diff(d, fmt, new_report), output, protected=[base, new])
        if not d.passed:
            _diff_violations(d)
            return EXIT_GATE
        return EXIT_OK

    run_guarded(debug, body)


def _print_diff(d: Diff, console: Console) -> None:
    from .render.diff import render_diff_table

    render_diff_table(d, console)


def _render_diff(d: Diff, fmt: DiffFormat, new: Report | None) -> str:
    if fmt is DiffFormat.json:
        return d.to_json()
    if fmt is DiffFormat.markdown:
        from .render.diff import render_diff_markdown

        return render_diff_markdown(d, new)
    return _text_of(lambda console: _print_diff(d, console))


@app.command()
def merge(
    reports: list[Path] = typer.Argument(
        ..., metavar="REPORT.json", help="JSON reports of partial scans of the same model."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the merged report here."),
    fmt: Format = typer.Option(
        Format.json, "--format", "-f", metavar="FORMAT", help="json (default), table, markdown or csv."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No warnings."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Combine partial scans (same model, same sites) into the report of the whole sample.

    Gates recorded in the parts (--fail-dead-ratio, ...) are evaluated again on the whole.
    """

    def body() -> int:
        from .errors import UserError
        from .merge import merge_reports
        from .report import Report

        seen: dict[Path, Path] = {}
        for p in reports:
            if p.resolve() in seen:
                raise UserError(
                    f"{p} is given twice (as {seen[p.resolve()]})",
                    "Each partial scan counts once; pass every report file once.",
                )
            seen[p.resolve()] = p
        merged = merge_reports([Report.load(p) for p in reports], [str(p) for p in reports])
        _warn(merged.warnings, quiet)
        if fmt is Format.table and output is None:
            print_table(merged)
        else:
            emit(render(merged, fmt), output, protected=list(reports))
        if not merged.gates.passed:
            _report_violations(
                [v.describe() for v in merged.gates.violations], f"{len(merged.gates.violations)} violation(s)"
            )
            return EXIT_GATE
        return EXIT_OK

    run_guarded(debug, body)


# -- scan --baseline ------------------------------------------------------------------------------------------------


def load_baseline(baseline: Path | None, fail_increase: float | None) -> Report | None:
    """Read BASE before the scan, so a wrong path or flag fails in a second, not after the scan."""
    from .compare import check_increase
    from .errors import UserError
    from .report import Report

    if baseline is None:
        if fail_increase is not None:
            raise UserError(
                "--fail-increase needs --baseline BASE.json",
                "Pass the JSON report to compare with, or use `relu-doctor diff`.",
            )
        return None
    check_increase(fail_increase)
    return Report.load(baseline)


def emit_with_baseline(
    report: Report,
    base: Report,
    base_path: Path,
    fmt: Format,
    output: Path | None,
    protected: list[Path],
    fail_increase: float | None,
    select: Sequence[str],
    ignore: Sequence[str],
    quiet: bool,
) -> bool:
    """Emit the scan with its diff against BASE; True when the --fail-increase gate passed.

    Table and Markdown get the diff appended (one summary for a terminal or a PR);
    JSON and CSV stay the report alone, so the diff goes to stderr as a table.
    """
    from .compare import diff as compare
    from .render.diff import render_diff_markdown

    d = compare(base, report, fail_increase, select, ignore)
    d.base["report"] = str(base_path)
    _warn(d.warnings, quiet)
    if fmt is Format.table and output is None:
        print_table(report)
        console = Console(highlight=False)
        console.print()
        console.rule("compared with the baseline", style="dim")
        _print_diff(d, console)
    elif fmt is Format.table:
        emit(render(report, fmt) + "\n" + _render_diff(d, DiffFormat.table, None), output, protected + [base_path])
    elif fmt is Format.markdown:
        emit(render(report, fmt) + "\n" + render_diff_markdown(d, None), output, protected + [base_path])
    else:
        emit(render(report, fmt), output, protected + [base_path])
        if not quiet:  # the diff is not data here: stderr, wrapped to the terminal like stdout's tables
            _print_diff(d, Console(stderr=True, highlight=False))
    if not d.passed:
        _diff_violations(d)
    return d.passed
