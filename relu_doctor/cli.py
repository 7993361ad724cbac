"""The relu-doctor command: parse, call the API, render, map errors to exit codes.

Heavy modules (numpy, torch, onnx) are imported inside the commands, so `--help` and
`--version` start fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List

import typer
from rich.console import Console

from . import __version__


class _Group(typer.core.TyperGroup):
    """Click's usage errors in our two-line shape: what is wrong, then where to look."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:  # typer >= 0.25 vendors click
            from typer._click import ClickException
        except ImportError:
            from click import ClickException

        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(130)
        except ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `relu-doctor`: the help is the answer
                _stderr().print(e.format_message(), highlight=False, markup=False)
                sys.exit(EXIT_USER)
            command = e.ctx.command_path if getattr(e, "ctx", None) else "relu-doctor"
            _say("error:", e.format_message(), "bold red")
            _stderr().print(f"See '{command} --help'.", highlight=False, markup=False)
            sys.exit(EXIT_USER)
        # without standalone mode click returns a command's exit code instead of exiting
        sys.exit(result if isinstance(result, int) else EXIT_OK)


app = typer.Typer(
    name="relu-doctor",
    cls=_Group,
    help="How many of your ReLUs are dead, and where. Scans PyTorch and ONNX models on a sample batch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EXIT_OK, EXIT_GATE, EXIT_USER, EXIT_BUG = 0, 1, 2, 3


class Format(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"
    csv = "csv"


class NeuronAxis(str, Enum):
    auto = "auto"
    channel = "channel"
    last = "last"


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(label: str, message: str, style: str) -> None:
    """One stderr line: a styled label, then the message as plain text (never Rich markup)."""
    from rich.text import Text

    _stderr().print(Text.assemble((label, style), " ", message))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relu-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """How many of your ReLUs are dead, and where."""


def run_guarded(debug: bool, body: Callable[[], int]) -> None:
    """Run a command body; user errors become two lines and exit 2, bugs exit 3."""
    from .errors import UserError, VerificationError, summarize_exception

    try:
        code = body()
    except UserError as e:
        _say("error:", e.message, "bold red")
        if e.hint:
            _stderr().print(e.hint, highlight=False, markup=False)
        if debug:
            raise
        raise typer.Exit(EXIT_USER) from None
    except VerificationError as e:
        _say("verification failed:", str(e), "bold red")
        if debug:
            raise
        raise typer.Exit(EXIT_BUG) from None
    except KeyboardInterrupt:
        _stderr().print("interrupted")
        raise typer.Exit(130) from None
    except Exception as e:  # a bug in relu-doctor: say so, keep the traceback for --debug
        if debug:
            raise
        _say("internal error:", f"{type(e).__name__}: {summarize_exception(e)}", "bold red")
        _stderr().print("This is a bug in relu-doctor; rerun with --debug for the traceback and report it.")
        raise typer.Exit(EXIT_BUG) from None
    raise typer.Exit(code)


def emit(text_or_render: Any, output: Path | None, protected: list[Path]) -> None:
    """Write data to -o FILE (atomically) or to stdout."""
    from .files import atomic_write_text, check_output_path

    if output is None:
        sys.stdout.write(text_or_render)
        sys.stdout.flush()
        return
    check_output_path(output, protected)
    atomic_write_text(output, text_or_render)


def render(report: Any, fmt: Format) -> str:
    if fmt is Format.json:
        return report.to_json()
    if fmt is Format.markdown:
        from .render.markdown import render_markdown

        return render_markdown(report)
    if fmt is Format.csv:
        from .render.csv import render_csv

        return render_csv(report)
    from .render.table import render_table

    buffer = Console(record=True, width=80, file=open(_devnull(), "w"), force_terminal=False)
    render_table(report, buffer)
    return buffer.export_text(styles=False)


def _devnull() -> str:
    import os

    return os.devnull


def _batch_size(text: str) -> int | str:
    from .errors import UserError

    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--batch-size {text!r} is not a number", "Give a positive integer or auto.") from None


def print_table(report: Any) -> None:
    """Straight to the terminal, in colour when stdout is one (Rich honours NO_COLOR)."""
    from .render.table import render_table

    render_table(report, Console(highlight=False))


class _ProgressBar:
    """A Rich progress bar on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.progress = Progress(
                "scanning", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_stderr(), transient=True
            )
            self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("scan", total=total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@app.command()
def scan(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file: .onnx, TorchScript, .pt2, state dict, safetensors."
    ),
    data: Path | None = typer.Option(
        None, "--data", metavar="PATH", help="Sample inputs: .npy, .npz (by input name) or .pt."
    ),
    input_shape: List[str] | None = typer.Option(
        None,
        "--input-shape",
        metavar="SHAPE",
        help="Per-sample input shape, no batch dim: 3,224,224 or name=3,224,224. Repeatable.",
    ),
    samples: int | None = typer.Option(None, "--samples", metavar="N", help="Samples to scan (synthetic default 256)."),
    batch_size: str = typer.Option("32", "--batch-size", metavar="B", help="Samples per forward pass, or auto."),
    max_batches: int | None = typer.Option(None, "--max-batches", metavar="N", help="Stop after this many batches."),
    shard: str | None = typer.Option(
        None, "--shard", metavar="I/N", help="Scan only shard I of N of the sample (I/N, from 0); combine with `merge`."
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the synthetic inputs."),
    input_range: str | None = typer.Option(
        None, "--input-range", metavar="LO,HI", help="Synthetic inputs uniform in LO,HI instead of standard normal."
    ),
    image_size: str | None = typer.Option(
        None, "--image-size", metavar="H,W", help="With --data FOLDER of images: resize them to H,W."
    ),
    mean: str | None = typer.Option(None, "--mean", metavar="R,G,B", help="Images: subtract this mean."),
    std: str | None = typer.Option(None, "--std", metavar="R,G,B", help="Images: divide by this std."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="cpu, cuda or auto."),
    arch: str | None = typer.Option(
        None, "--arch", metavar="MODULE:CALLABLE", help="MODULE:CALLABLE building the model for a state dict."
    ),
    arch_kwargs: str | None = typer.Option(
        None, "--arch-kwargs", metavar="JSON", help="JSON keyword arguments for --arch."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow loading a pickled nn.Module. Unpickling runs code from the file."
    ),
    tau: float = typer.Option(0.025, "--tau", metavar="TAU", help="ReDo dormancy threshold."),
    neuron_axis: NeuronAxis = typer.Option(
        NeuronAxis.auto, "--neuron-axis", metavar="AXIS", help="auto, channel or last."
    ),
    include_smooth: bool = typer.Option(False, "--include-smooth", help="Also report GELU, SiLU, ELU, ... sites."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", metavar="FORMAT", help="table, json, markdown or csv."),
    output: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write the report here instead of stdout."
    ),
    fail_dead_ratio: float | None = typer.Option(
        None, "--fail-dead-ratio", metavar="R", help="Exit 1 if any ReLU-type site has a dead ratio above R."
    ),
    fail_total_dead_ratio: float | None = typer.Option(
        None, "--fail-total-dead-ratio", metavar="R", help="Exit 1 if the model's dead ratio is above R."
    ),
    select: List[str] | None = typer.Option(
        None, "--select", metavar="GLOB", help="Glob of site names the gates count."
    ),
    ignore: List[str] | None = typer.Option(
        None, "--ignore", metavar="GLOB", help="Glob of site names the gates skip."
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", metavar="BASE.json", help="Also compare with this earlier JSON report (as `diff`)."
    ),
    fail_increase: float | None = typer.Option(
        None,
        "--fail-increase",
        metavar="PP",
        help="With --baseline: exit 1 if a site's dead ratio grew by more than PP percentage points.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no warnings."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Scan MODEL on a sample and report dead ReLUs per activation site."""

    def body() -> int:
        from .api import scan as api_scan
        from .cli_compare import emit_with_baseline, load_baseline
        from .files import check_output_path
        from .gates import check_threshold

        # Wrong flags and a missing baseline fail now, not after a long scan.
        check_threshold("fail_dead_ratio", fail_dead_ratio)
        check_threshold("fail_total_dead_ratio", fail_total_dead_ratio)
        base = load_baseline(baseline, fail_increase)
        protected = [model] + ([data] if data else [])
        if output is not None:
            check_output_path(output, protected)
        bar = _ProgressBar(enabled=not quiet)
        try:
            report = api_scan(
                model,
                data,
                input_shape=input_shape,
                samples=samples,
                batch_size=_batch_size(batch_size),
                max_batches=max_batches,
                image_size=image_size,
                mean=mean,
                std=std,
                shard=shard,
                seed=seed,
                device=device,
                tau=tau,
                neuron_axis=neuron_axis.value,
                include_smooth=include_smooth,
                input_range=input_range,
                arch=arch,
                arch_kwargs=arch_kwargs,
                trust_pickle=trust_pickle,
                select=select or (),
                ignore=ignore or (),
                fail_dead_ratio=fail_dead_ratio,
                fail_total_dead_ratio=fail_total_dead_ratio,
                progress=bar,
            )
        finally:
            bar.close()
        from .distributed import current_world

        if not current_world().is_writer:  # under torchrun, rank 0 alone speaks and writes
            return EXIT_OK if report.gates.passed else EXIT_GATE
        if not quiet:
            for w in report.warnings:
                _say("warning:", w, "yellow")
        diff_passed = True
        if base is not None and baseline is not None:
            diff_passed = emit_with_baseline(
                report, base, baseline, fmt, output, protected, fail_increase, select or (), ignore or (), quiet
            )
        elif fmt is Format.table and output is None:
            print_table(report)
        else:
            emit(render(report, fmt), output, protected=protected)
        if not report.gates.passed:
            _say("gate failed:", f"{len(report.gates.violations)} violation(s)", "bold red")
            for v in report.gates.violations:
                _stderr().print(f"  {v.describe()}", highlight=False, markup=False)
            return EXIT_GATE
        return EXIT_OK if diff_passed else EXIT_GATE

    run_guarded(debug, body)


# The other commands live in their own modules and register themselves on `app`.
from . import cli_compare, cli_patch  # noqa: E402,F401


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
