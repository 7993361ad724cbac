"""relu-doctor patch: rewrite dead ReLUs to leak (SPEC 7).

The summary (plan, verification, cost) is the command's result and goes to stdout;
warnings and errors go to stderr.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from .cli import EXIT_OK, NeuronAxis, _ProgressBar, _say, app, run_guarded

if TYPE_CHECKING:
    from .patching.plan import PatchPlan
    from .patching.run import PatchOutcome
    from .patching.verify import Verification


class Mode(str, Enum):
    channel = "channel"
    layer = "layer"


class OutputFormat(str, Enum):
    module = "module"
    onnx = "onnx"
    pt2 = "pt2"
    torchscript = "torchscript"


_FORMAT_NAMES = {"module": "pickled module", "onnx": "ONNX", "pt2": "torch.export .pt2", "torchscript": "TorchScript"}


@app.command()
def patch(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Model file: .onnx, .pt2, pickled module, state dict, safetensors."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="OUT", help="Where to write the patched model."),
    data: Path | None = typer.Option(
        None, "--data", metavar="PATH", help="Sample inputs: .npy, .npz (by input name) or .pt."
    ),
    input_shape: list[str] | None = typer.Option(
        None,
        "--input-shape",
        metavar="SHAPE",
        help="Per-sample input shape, no batch dim: 3,224,224 or name=3,224,224. Repeatable.",
    ),
    samples: int | None = typer.Option(None, "--samples", metavar="N", help="Samples to scan (synthetic default 256)."),
    batch_size: int = typer.Option(32, "--batch-size", metavar="B", help="Samples per forward pass."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the synthetic inputs."),
    input_range: str | None = typer.Option(
        None, "--input-range", metavar="LO,HI", help="Synthetic inputs uniform in LO,HI instead of standard normal."
    ),
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
    neuron_axis: NeuronAxis = typer.Option(
        NeuronAxis.auto, "--neuron-axis", metavar="AXIS", help="auto, channel or last."
    ),
    report: Path | None = typer.Option(
        None, "--report", metavar="R.json", help="Reuse this scan of MODEL (its model.sha256 must match)."
    ),
    mode: Mode = typer.Option(
        Mode.channel, "--mode", metavar="MODE", help="channel: only dead neurons leak; layer: LeakyReLU."
    ),
    slope: float = typer.Option(0.01, "--slope", metavar="SLOPE", help="Negative slope of the leaking neurons."),
    min_dead_ratio: float = typer.Option(
        0.0, "--min-dead-ratio", metavar="R", help="Patch only sites with at least this dead ratio."
    ),
    select: list[str] | None = typer.Option(
        None, "--select", metavar="GLOB", help="Glob of site names to patch. Repeatable."
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", metavar="GLOB", help="Glob of site names to leave. Repeatable."
    ),
    to: OutputFormat | None = typer.Option(
        None,
        "--to",
        metavar="FORMAT",
        help="Output format for a state dict / safetensors / pickled module: onnx, pt2, torchscript.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; write nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no warnings."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Rewrite the dead ReLUs of MODEL so that they leak, verify, and write OUT."""

    def body() -> int:
        from .patching.run import ScanOptions, patch_file

        options = ScanOptions(
            data=data,
            input_shape=input_shape,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            device=device,
            neuron_axis=neuron_axis.value,
            input_range=input_range,
            arch=arch,
            arch_kwargs=arch_kwargs,
            trust_pickle=trust_pickle,
        )
        bar = _ProgressBar(enabled=not quiet)
        try:
            outcome = patch_file(
                model,
                output,
                options=options,
                report_path=report,
                slope=slope,
                mode=mode.value,
                min_dead_ratio=min_dead_ratio,
                select=select or (),
                ignore=ignore or (),
                to=to.value if to else None,
                force=force,
                dry_run=dry_run,
                progress=bar,
            )
        finally:
            bar.close()
        if not quiet:
            for w in [*outcome.report.warnings, *outcome.warnings]:
                _say("warning:", w, "yellow")
        print_outcome(outcome, Console(highlight=False, soft_wrap=True))
        return EXIT_OK

    run_guarded(debug, body)


def print_outcome(outcome: PatchOutcome, console: Console) -> None:
    plan = outcome.plan
    if not plan.sites:
        console.print(
            "Nothing to patch: no ReLU-type site with dead neurons was selected "
            f"({len(plan.site_names)} sites scanned). Nothing written.",
            markup=False,
        )
        return
    v = outcome.verification
    console.print(_plan_table(plan, v))
    console.print(
        f"{len(plan.sites)} site(s), {plan.leaky_neurons} neuron(s) made leaky "
        f"(--mode {plan.mode}, slope {plan.slope:g})",
        markup=False,
    )
    if not outcome.written or v is None or outcome.out is None:
        console.print("Dry run: nothing written.", markup=False)
        return
    _print_verification(v, plan, console)
    if outcome.output_format == "onnx" and plan.mode == "channel":
        console.print(
            "Cost: a per-channel PRelu stops onnxruntime from fusing the activation into the "
            "convolution before it; --mode layer (LeakyRelu) keeps most fusions.",
            markup=False,
        )
    console.print(
        f"Wrote {outcome.out} ({_FORMAT_NAMES.get(outcome.output_format, outcome.output_format)}).", markup=False
    )


def _plan_table(plan: PatchPlan, v: Verification | None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (
        ("site", "left"),
        ("kind", "left"),
        ("neurons", "right"),
        ("dead", "right"),
        ("leaky", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    renamed = v is not None and any(c.new_name and c.new_name != c.patch.name for c in v.checks)
    if renamed:
        table.add_column("name now")
    names = {c.patch.index: c.new_name for c in v.checks} if v is not None else {}
    for p in plan.sites:
        row = [p.name, p.kind, str(p.neurons), str(len(p.dead)), str(p.leaky_neurons)]
        if renamed:
            row.append(names.get(p.index) or "")
        table.add_row(*row)
    return table


def _print_verification(v: Verification, plan: PatchPlan, console: Console) -> None:
    lines = [f"Verified, reloaded from the file: {v.samples} sample + {v.fresh} fresh random inputs"]
    live = sum(c.live_entries for c in v.checks)
    if plan.mode == "channel":
        lines.append(f"  live neurons unchanged, bit for bit: {live} outputs checked")
    lines.append(f"  leaking neurons: non-zero on {v.leaking} of {v.negative_inputs} negative inputs")
    lines.append(f"  max |change| of the model outputs on the sample: {v.max_abs_change:.3g}")
    lines.append(
        f"  inference per batch of {v.timed_batch}: {_ms(v.seconds_original)} original, "
        f"{_ms(v.seconds_patched)} patched ({_percent(v.seconds_original, v.seconds_patched)})"
    )
    if v.rescan is not None:
        left = v.rescan.summary.dead
        lines.append(
            "  rescan: no grad-blocked dead neuron left (--fail-dead-ratio 0 passes)"
            if not left
            else f"  rescan: {left} grad-blocked dead neuron(s) left in sites not patched"
        )
    for line in lines + [f"  note: {n}" for n in v.notes]:
        console.print(line, markup=False)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def _percent(before: float, after: float) -> Any:
    if before <= 0:
        return "n/a"
    return f"{(after - before) / before:+.0%}"
