"""relu-doctor timeline: dead neurons over a training run, from a watch history or checkpoints (SPEC 12)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from .common import EXIT_GATE, EXIT_OK, emit, gate_failed, run_guarded, say, stderr, stdout_console
from .options import MEASURE, MODEL, NEURONS, REPORT_OUTPUT, RUN, SAMPLE, Opt, Options, takes

EXAMPLES = """\b
Examples:
  relu-doctor timeline relu.jsonl
  relu-doctor timeline ckpt/epoch*.pt --arch mymodels:build --data batch.npy -o timeline.html
  relu-doctor timeline relu.jsonl --fail-new-dead 5 -f markdown
"""


class TimelineFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    csv = "csv"
    html = "html"



FAIL_NEW_DEAD = Opt("fail_new_dead", float | None, None, ("--fail-new-dead",),
                    "Exit 1 if a ReLU-type site has more than PP percentage points of its neurons dead at the last "
                    "point that were alive at the first.", "PP")


def is_history(path: Path) -> bool:
    """A watch history is JSON lines: its first non-blank byte is '{' (model files never start so)."""
    if path.suffix == ".jsonl":
        return True
    try:
        with path.open("rb") as f:
            head = f.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


FORMAT = Opt("format", TimelineFormat | None, None, ("--format", "-f"),
             "table, json, markdown, csv or html (default: -o's extension, else table).", "FORMAT",
             finish=lambda v: None if v is None else v.value)


@takes(MODEL, SAMPLE, MEASURE, (FAIL_NEW_DEAD,), (FORMAT, REPORT_OUTPUT, NEURONS), RUN)
def timeline(
    inputs: list[Path] = typer.Argument(
        ..., metavar="HISTORY.jsonl | CKPT...",
        help="A watch history, or checkpoints of one model (ordered by stored step, else file-name number).",
    ),
    *,
    opts: Options,
) -> None:
    """Per site the dead ratio at each point of a training run; per neuron the step it died at."""

    def body() -> int:
        from ..errors import UserError
        from ..files import check_output_path

        for path in (opts.output, opts.neurons):
            if path is not None:
                check_output_path(path, list(inputs))
        if opts.neurons is not None and opts.output is not None and opts.neurons.resolve() == opts.output.resolve():
            raise UserError("--neurons and -o name the same file", "Give the .npz its own path.")
        from ..render.formats import format_for

        fmt = format_for(opts.output, opts.format, "table", [f.value for f in TimelineFormat])
        if fmt == "html":
            from ..render.html_charts import matplotlib

            matplotlib()  # a missing html extra fails now, not after scanning checkpoints
        if any(is_history(p) for p in inputs):
            if len(inputs) > 1:
                raise UserError("give one watch history, or checkpoints: not both, nor several histories",
                                "Concatenate histories first: cat a.jsonl b.jsonl > all.jsonl.")
            scan_flags = ("data", "input_shape", "samples", "arch", "arch_kwargs", "input_range", "image_size",
                          "trust_pickle", "max_batches")
            if any(opts[name] for name in scan_flags):
                raise UserError("scan options (--data, --arch, ...) apply to checkpoints, not to a watch history")
            result = _from_history(inputs[0], opts.fail_new_dead)
        else:
            from ..analysis.checkpoints import from_checkpoints

            result = from_checkpoints(inputs, opts.fail_new_dead, progress=None if opts.quiet else _progress,
                                      neuron_extremes=opts.neurons is not None, **opts.of(MODEL, SAMPLE, MEASURE))
        if opts.neurons is not None:
            from ..neurons import neuron_arrays_over_time, write_neurons

            write_neurons(neuron_arrays_over_time([p.report for p in result.points], result.steps), opts.neurons)
        if not opts.quiet:
            for w in result.warnings:
                say("note:" if w.startswith("checkpoints ordered") else "warning:", w, "yellow")
        if fmt == "table" and opts.output is None:
            from ..render.timeline import render_timeline_table

            render_timeline_table(result, stdout_console())
        else:
            emit(_render(result, fmt), opts.output, protected=list(inputs))
        if not result.passed:
            gate_failed(f"{len(result.violations)} site(s) gained more than {opts.fail_new_dead:g} pp dead neurons",
                        [v.describe() for v in result.violations])
            return EXIT_GATE
        return EXIT_OK

    run_guarded(opts.debug, body)


def _from_history(path: Path, fail_new_dead: float | None) -> Any:
    from ..analysis.timeline import from_history
    from ..training.history import read_history

    reports, warnings = read_history(path)
    return from_history(reports, fail_new_dead, warnings)


def _progress(path: str) -> None:
    stderr().print(f"scanning {path}", highlight=False, markup=False)


def _render(result: Any, fmt: str) -> str:
    if fmt == "json":
        return str(result.to_json())
    if fmt == "markdown":
        from ..render.timeline import render_timeline_markdown

        return render_timeline_markdown(result)
    if fmt == "csv":
        from ..render.timeline import render_timeline_csv

        return render_timeline_csv(result)
    if fmt == "html":
        from ..render.html import render_timeline_html

        return render_timeline_html(result.to_dict())
    import os

    from rich.console import Console

    from ..render.timeline import render_timeline_table

    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=80, file=sink, force_terminal=False)
        render_timeline_table(result, console)
    return console.export_text(styles=False)
