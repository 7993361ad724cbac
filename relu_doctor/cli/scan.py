"""relu-doctor scan: run MODEL on a sample and report dead ReLUs per activation site (SPEC 6)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_GATE, EXIT_OK, ProgressBar, emit, gate_failed, run_guarded, say, stdout_console, warn
from .options import (
    BASELINE,
    DISPLAY,
    FAIL_INCREASE,
    GATES,
    MEASURE,
    MODEL,
    NEURONS,
    PROVE,
    REPORT_OUTPUT,
    RUN,
    SAMPLE,
    SELECT,
    SHARD,
    TIMEOUT,
    Options,
    report_format,
    takes,
)

EXAMPLES = """\b
Examples:
  relu-doctor scan model.onnx --data batch.npy
  relu-doctor scan resnet.pt --arch torchvision.models:resnet18 --input-shape 3,224,224
  relu-doctor scan model.pt2 --data batch.npy -o report.json --fail-dead-ratio 0.25
  relu-doctor scan big.onnx --data batch.npy --top 20 --only-dead
  relu-doctor scan model.onnx --data batch.npy --shard 0/4 -o part0.json
"""


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    csv = "csv"
    html = "html"


@takes(MODEL, SAMPLE, (SHARD, TIMEOUT), MEASURE, (report_format(Format, Format.table), REPORT_OUTPUT, NEURONS), DISPLAY,
       GATES, PROVE, SELECT, (BASELINE, FAIL_INCREASE), RUN)
def scan(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file: .onnx, TorchScript, .pt2, state dict, safetensors."
    ),
    *,
    opts: Options,
) -> None:
    """Scan MODEL on a sample and report dead ReLUs per activation site."""

    def body() -> int:
        from ..api import scan as api_scan
        from ..distributed import current_world
        from ..errors import UserError
        from ..files import check_output_path
        from ..guest import call_quietly
        from ..render.formats import format_for, print_report, render_report
        from ..render.table import Rows
        from .baseline import emit_with_baseline, load_baseline

        # Wrong flags and a missing baseline fail now, not after a long scan.
        fmt = format_for(opts.output, opts.format, "table", [f.value for f in Format])
        rows = Rows(opts.top, opts.only_dead)
        base = load_baseline(opts.baseline, opts.fail_increase)
        protected = [model] + ([opts.data] if opts.data else [])
        if opts.output is not None:
            check_output_path(opts.output, protected)
        if opts.neurons is not None:
            if opts.output is not None and opts.neurons.resolve() == opts.output.resolve():
                raise UserError("--neurons and -o name the same file", "Give the .npz its own path.")
            check_output_path(opts.neurons, protected)
        if fmt == "html":  # a missing extra fails now, not after the scan
            from ..render.html_charts import matplotlib

            matplotlib()
        bar = ProgressBar(enabled=not opts.quiet)
        try:
            kwargs = opts.of(MODEL, SAMPLE, (SHARD, TIMEOUT), MEASURE, SELECT, GATES, PROVE)
            kwargs["neuron_extremes"] = opts.neurons is not None  # the .npz's per-neuron max and min
            # model code may print: stdout stays the report's; warnings are printed below, once
            report = call_quietly(api_scan, model, **kwargs, progress=bar, warn=False)
        finally:
            bar.close()
        if not current_world().is_writer:  # under torchrun, rank 0 alone speaks and writes
            return EXIT_OK if report.gates.passed else EXIT_GATE
        warn(report.warnings, opts.quiet)
        if opts.neurons is not None:
            from ..neurons import write_neurons

            write_neurons(report, opts.neurons)
        if opts.shard and report.gates.checked and not opts.quiet:
            say("note:", f"shard {opts.shard}: the gates are recorded in the report, not judged; "
                "`relu-doctor merge` judges the whole", "cyan")
        diff_passed = True
        if base is not None and opts.baseline is not None:
            diff_passed = emit_with_baseline(report, base, opts.baseline, fmt, opts.output, protected,
                                             opts.fail_increase, opts.select, opts.ignore, opts.quiet, rows)
        elif fmt == "table" and opts.output is None:
            print_report(report, stdout_console(), rows)
        else:
            emit(render_report(report, fmt, rows=rows), opts.output, protected=protected)
        if not report.gates.passed:
            gate_failed(f"{len(report.gates.violations)} violation(s)", [v.describe() for v in report.gates.violations])
            return EXIT_GATE
        return EXIT_OK if diff_passed else EXIT_GATE

    run_guarded(opts.debug, body)
