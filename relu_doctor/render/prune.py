"""The summary of `relu-doctor prune`: what was removed, what was left alone and why, the check, the gain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from .patch import FORMAT_NAMES

if TYPE_CHECKING:
    from ..patching.prune_run import PruneOutcome


def print_prune(outcome: PruneOutcome, console: Console) -> None:
    plan = outcome.plan
    say = lambda text: console.print(text, markup=False)  # noqa: E731
    if plan.groups:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("site", "left"), ("neurons", "right"), ("removed", "right"), ("left", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for g in plan.groups:
            table.add_row(g.site, str(g.total), str(len(g.neurons)), str(g.total - len(g.neurons)))
        console.print(table)
    for left in plan.left_alone:
        say(f"Left alone: {left.name} ({left.neurons} {plan.source} neurons): {left.reason}.")
    if not plan.groups:
        say(f"Nothing to prune: no {plan.source} neuron can be removed. Nothing written.")
        return
    say(f"{len(plan.groups)} site(s), {plan.neurons} {plan.source} neuron(s) removed with their channels.")
    check = outcome.check
    if not outcome.written or check is None or outcome.out is None:
        say("Dry run: nothing written.")
        return
    same = "bit for bit" if check.bit_identical else (
        f"within {check.relative_change:.2g} of the outputs' scale (max |change| {check.max_abs_change:.3g}: "
        "the backend sums fewer terms, in another order)")
    where = f"{check.samples} sample" + (f" + {check.fresh} fresh random inputs" if check.fresh else " inputs")
    scope = ("on every input the proofs cover" if plan.source == "provably dead"
             else "on the sample; elsewhere the removed neurons might have fired")
    say(f"Verified, reloaded from the file: outputs equal the original's {same}, on {where}.")
    say(f"  the same function {scope}")
    say(f"  weights: {outcome.weights_before:,} -> {outcome.weights_after:,} "
        f"({_less(outcome.weights_before, outcome.weights_after)})")
    say(f"  FLOPs per input: {2 * outcome.macs_before:,} -> {2 * outcome.macs_after:,} "
        f"({_less(outcome.macs_before, outcome.macs_after)})")
    say(f"  file: {outcome.bytes_before:,} -> {outcome.bytes_after:,} bytes")
    if check.seconds_pruned > 0:
        say(f"  inference per batch of {check.timed_batch}: {check.seconds_original * 1e3:.2f} ms original, "
            f"{check.seconds_pruned * 1e3:.2f} ms pruned (x{check.seconds_original / check.seconds_pruned:.2f})")
    say(f"Wrote {outcome.out} ({FORMAT_NAMES.get(outcome.output_format, outcome.output_format)}).")


def _less(before: int, after: int) -> str:
    return f"-{(before - after) / before:.1%}" if before else "n/a"
