"""relu-doctor prune: remove dead channels structurally, verify, write OUT (SPEC 14).

The summary goes to stdout; warnings and errors go to stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import EXIT_OK, ProgressBar, run_guarded, stdout_console, warn
from .options import MEASURE, MODEL, RUN, SAMPLE, SELECT, WRITE_MODEL, Options, takes

EXAMPLES = """\b
Examples:
  relu-doctor prune model.onnx -o model.pruned.onnx
  relu-doctor prune model.pt2 --data batch.npy --sample-dead -o model.pruned.pt2
"""

@takes(MODEL, SAMPLE, MEASURE, SELECT, WRITE_MODEL, RUN)
def prune(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file: .onnx, .pt2, pickled module, state dict, safetensors."
    ),
    sample_dead: bool = typer.Option(
        False, "--sample-dead",
        help="Also prune neurons dead on the sample (outputs unchanged on the sample only), not only provably "
        "dead ones.",
    ),
    *,
    opts: Options,
) -> None:
    """Remove the dead channels of MODEL (by default only provably dead ones), verify, and write OUT."""

    def body() -> int:
        from ..patching.prune_run import prune_file
        from ..patching.run import ScanOptions
        from ..render.prune import print_prune

        bar = ProgressBar(enabled=not opts.quiet)
        try:
            outcome = prune_file(model, opts.output, options=ScanOptions(**opts.of(MODEL, SAMPLE, MEASURE)),
                                 sample_dead=sample_dead, select=opts.select, ignore=opts.ignore,
                                 to=opts.to.value if opts.to else None, force=opts.force, dry_run=opts.dry_run,
                                 progress=bar)
        finally:
            bar.close()
        warn([*outcome.report.warnings, *outcome.warnings], opts.quiet)
        print_prune(outcome, stdout_console(soft_wrap=True))
        return EXIT_OK

    run_guarded(opts.debug, body)
