"""The summary of `relu-doctor patch`: the plan, the verification and the cost, for a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..formats import FORMATS
from .escape import rich_text, visible

if TYPE_CHECKING:
    from ..patching.plan import PatchPlan
    from ..patching.run import PatchOutcome
    from ..patching.verify import Verification

FORMAT_NAMES = {name: entry.title for name, entry in FORMATS.items()}


def print_outcome(outcome: PatchOutcome, console: Console) -> None:
    plan = outcome.plan
    for left in plan.left_alone:
        console.print(f"Left alone: {left.name} ({left.neurons} dead neurons): {left.reason}.", markup=False)
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
    if plan.mode == "revive":
        weights = sorted({w for ws in plan.zeroed.values() for w in ws})
        console.print(
            f"Revive: the dead neurons' inputs to {', '.join(weights)} are zero, so the outputs are unchanged "
            "wherever those neurons do not fire (on every input for provably dead ones: scan --prove).",
            markup=False,
        )
    if outcome.output_format == "onnx" and plan.mode == "channel":
        console.print(  # wrapped to the terminal, unlike the lines above that hold paths
            "Cost: a per-channel PRelu stops onnxruntime from fusing the activation into the "
            "convolution before it; --mode layer (LeakyRelu) keeps most fusions.",
            markup=False, soft_wrap=False,
        )
    written = FORMAT_NAMES.get(outcome.output_format, outcome.output_format)
    console.print(f"Wrote {visible(outcome.out)} ({written}).", markup=False)


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
        row: list[Text | str] = [rich_text(p.name), rich_text(p.kind), str(p.neurons), str(len(p.dead)),
                                 str(p.leaky_neurons)]
        if renamed:
            row.append(rich_text(names.get(p.index) or ""))
        table.add_row(*row)
    return table


def _print_verification(v: Verification, plan: PatchPlan, console: Console) -> None:
    lines = [f"Verified, reloaded from the file: {v.samples} sample + {v.fresh} fresh random inputs"]
    live = sum(c.live_entries for c in v.checks)
    if plan.mode in ("channel", "revive"):
        lines.append(f"  live neurons unchanged, bit for bit: {live} outputs checked")
    lines.append(f"  leaking neurons: non-zero on {v.leaking} of {v.negative_inputs} negative inputs")
    # two runtimes (an eager model written as ONNX): the change includes the conversion, and
    # the times compare runtimes as much as the patch, so no percentage
    two = v.original_runtime is not None
    conversion = (f" (the original in {v.original_runtime}, the patched file in {v.patched_runtime}: "
                  "conversion rounding included)") if two else ""
    lines.append(f"  max |change| of the model outputs on the sample: {v.max_abs_change:.3g}{conversion}")
    before, after = (f" in {v.original_runtime}", f" in {v.patched_runtime}") if two else ("", "")
    cost = "" if two else f" ({_percent(v.seconds_original, v.seconds_patched)})"
    lines.append(f"  inference per batch of {v.timed_batch}: {_ms(v.seconds_original)} original{before}, "
                 f"{_ms(v.seconds_patched)} patched{after}{cost}")
    if v.rescan is not None:
        left = v.rescan.summary.dead
        lines.append(
            "  rescan: no grad-blocked dead neuron left (--fail-dead-ratio 0 passes)"
            if not left
            else f"  rescan: {left} grad-blocked dead neuron(s) left in sites not patched"
        )
    for line in lines + [f"  note: {visible(n)}" for n in v.notes]:
        console.print(line, markup=False)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def _percent(before: float, after: float) -> str:
    if before <= 0:
        return "n/a"
    return f"{(after - before) / before:+.0%}"
