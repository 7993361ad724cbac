"""relu-doctor patch: rewrite dead ReLUs to leak, verify, write OUT (SPEC 7).

The summary (plan, verification, cost) is the command's result and goes to stdout;
warnings and errors go to stderr.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_OK, ProgressBar, run_guarded, stdout_console, warn
from .options import MEASURE, MODEL, RUN, SAMPLE, SELECT, TIMEOUT, WRITE_MODEL, Options, takes

EXAMPLES = """\b
Examples:
  relu-doctor patch model.onnx --data batch.npy -o model.patched.onnx
  relu-doctor patch weights.pt --arch mymodels:build --data batch.npy -o model.patched.pt2
  relu-doctor patch model.pt2 --report report.json --mode layer -o model.leaky.pt2
  relu-doctor patch model.onnx --data batch.npy --dry-run
"""


class Mode(str, Enum):
    channel = "channel"
    layer = "layer"
    revive = "revive"


@takes(MODEL, SAMPLE, MEASURE, SELECT, WRITE_MODEL, (TIMEOUT,), RUN)
def patch(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file: .onnx, .pt2, pickled module, state dict, safetensors."
    ),
    report: Path | None = typer.Option(
        None, "--report", metavar="R.json", help="Reuse this scan of MODEL (its model.sha256 must match)."
    ),
    mode: Mode = typer.Option(
        Mode.channel, "--mode", metavar="MODE", help="channel: only dead neurons leak; layer: LeakyReLU; "
        "revive: channel, and the weights reading the dead neurons are zeroed (same outputs, gradients flow)."
    ),
    slope: float = typer.Option(0.01, "--slope", metavar="SLOPE", help="Negative slope of the leaking neurons."),
    min_dead_ratio: float = typer.Option(
        0.0, "--min-dead-ratio", metavar="R", help="Patch only sites with at least this dead ratio."
    ),
    *,
    opts: Options,
) -> None:
    """Rewrite the dead ReLUs of MODEL so that they leak, verify, and write OUT."""

    def body() -> int:
        from ..guest import call_quietly
        from ..patching.run import ScanOptions, patch_file
        from ..render.patch import print_outcome

        bar = ProgressBar(enabled=not opts.quiet)
        try:
            outcome = call_quietly(  # model code may print: stdout stays the summary's
                patch_file,
                model,
                opts.output,
                options=ScanOptions(**opts.of(MODEL, SAMPLE, MEASURE)),
                report_path=report,
                slope=slope,
                mode=mode.value,
                min_dead_ratio=min_dead_ratio,
                select=opts.select,
                ignore=opts.ignore,
                to=opts.to.value if opts.to else None,
                force=opts.force,
                dry_run=opts.dry_run,
                progress=bar,
                timeout=opts.timeout,
            )
        finally:
            bar.close()
        warn([*outcome.report.warnings, *outcome.warnings], opts.quiet)
        print_outcome(outcome, stdout_console(soft_wrap=True))
        return EXIT_OK

    run_guarded(opts.debug, body)
