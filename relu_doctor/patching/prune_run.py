"""`relu-doctor prune MODEL -o OUT`: remove dead channels structurally (SPEC 14), verify, write.

Which neurons: by default only provably dead ones (`scan --prove`: the outputs are the
same on every input the proof covers); with --sample-dead also those dead on the sample
(the outputs are the same on the sample, not necessarily elsewhere). Write rules and
verification are patch's: OUT is written beside itself, reloaded, the sample and fresh
random inputs run through it and the original, and it takes OUT's name only when the
outputs agree (bit for bit, or within PRUNE_RTOL of the outputs' scale: removing
zero terms from a sum can change how a backend rounds it); else exit 3, nothing left.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import formats
from ..errors import UserError, VerificationError
from ..files import atomic_path, check_output_path, write_error
from ..formats import MODULE, ONNX, TORCHSCRIPT
from ..gates import selected
from ..inputs import Sample, synthetic_sample
from ..loading import LoadedModel, load_model
from ..report import ModelInfo, Report
from .prune_plan import PROVABLY_DEAD, SAMPLE_DEAD, PrunePlan
from .run import ScanOptions, _serialize, output_format, scan_sample
from .verify import PairTimer

PRUNE_RTOL = 1e-6  # largest |change| allowed, relative to the largest |output|
FRESH_SAMPLES = 32


@dataclass
class PruneCheck:
    samples: int = 0
    fresh: int = 0
    bit_identical: bool = True
    max_abs_change: float = 0.0
    max_abs_output: float = 0.0
    seconds_original: float = 0.0
    seconds_pruned: float = 0.0
    timed_batch: int = 0

    @property
    def relative_change(self) -> float:
        return self.max_abs_change / self.max_abs_output if self.max_abs_output else self.max_abs_change


@dataclass
class PruneOutcome:
    model: Path
    out: Path | None
    output_format: str
    report: Report
    plan: PrunePlan
    weights_before: int = 0
    weights_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    check: PruneCheck | None = None
    warnings: list[str] = field(default_factory=list)
    written: bool = False


def prune_file(model: str | Path, out: str | Path | None, *, options: ScanOptions | None = None,
               sample_dead: bool = False, select: Sequence[str] = (), ignore: Sequence[str] = (),
               to: str | None = None, force: bool = False, dry_run: bool = False, progress: Any = None) -> PruneOutcome:
    """Prune the model file `model` into `out`; raises VerificationError (nothing written) on failure."""
    from .. import api

    opts = options or ScanOptions()
    model = Path(model)
    out = Path(out) if out is not None else None
    if out is None and not dry_run:
        raise UserError("prune needs -o OUT", "Say where to write the pruned model, or pass --dry-run.")
    protected = [model] + [Path(p) for p in (opts.data,) if isinstance(p, (str, Path))]
    if out is not None and not dry_run:
        check_output_path(out, protected, force=force)
    loaded = load_model(model, opts.arch, opts.arch_kwargs, opts.trust_pickle)
    if loaded.format == TORCHSCRIPT:
        raise UserError("TorchScript archives cannot be pruned: their compiled graphs fix every layer's size",
                        "Prune the model as a pickled module, a state dict with --arch, a .pt2 or an ONNX file.")
    fmt = output_format(loaded.format, to, out)
    report = api.scan(loaded.obj, opts.data, progress=progress, prove=True, warn=False, **opts.scan_kwargs())
    report.model = ModelInfo.from_dict(loaded.describe())
    source = SAMPLE_DEAD if sample_dead else PROVABLY_DEAD
    targets = {}
    for s in selected(report.sites, select, ignore):
        neurons = s.dead_indices if sample_dead else (s.proof.indices if s.proof else [])
        if s.grad_blocked and neurons:
            targets[s.name] = (list(neurons), s.axis, s.neurons)
    include_smooth = report.settings.include_smooth
    sample, batch_size, fixed_batch = scan_sample(loaded, report, opts)
    example: Any = None
    if loaded.format != ONNX:
        from .torch import example_inputs

        example = example_inputs(next(sample.batches(min(2, sample.count), fixed_batch)).arrays, loaded.obj)
    plan = _plan(loaded, targets, source, example, include_smooth)
    outcome = PruneOutcome(model, out, fmt, report, plan, bytes_before=model.stat().st_size)
    if dry_run or not plan.groups or out is None:
        return outcome
    pruned = _prune(loaded, plan, example)
    outcome.weights_before, outcome.weights_after = _weights(loaded.obj), _weights(pruned)
    outcome.macs_before, outcome.macs_after = _macs(loaded.obj, sample), _macs(pruned, sample)
    if fmt != MODULE and formats.get(loaded.format).convertible:
        from .torch import convert

        pruned, notes = convert(pruned, fmt, example, [s.name for s in sample.specs])
        outcome.warnings += notes
    fresh = synthetic_sample(sample.specs, FRESH_SAMPLES, opts.seed + 1_000_003, sample.input_range)
    data = _serialize(pruned, fmt)  # in memory: no C++ writer ever meets a full disk (files.py)
    try:
        with atomic_path(out, suffix=formats.get(fmt).temp_suffix, force=force) as tmp:
            tmp.write_bytes(data)
            reloaded = load_model(tmp, trust_pickle=True).obj  # our own file, written a moment ago
            original = loaded.obj
            if fmt == ONNX and loaded.format != ONNX:
                from .torch import onnx_proto

                original = onnx_proto(loaded.obj, example, [s.name for s in sample.specs])
            outcome.check = _check(original, reloaded, sample, fresh if not sample_dead else None, batch_size,
                                   opts.device)
            if not _agrees(outcome.check):
                raise VerificationError(
                    f"the pruned model's outputs differ from the original's by {outcome.check.max_abs_change:.3g} "
                    f"(relative {outcome.check.relative_change:.3g} > {PRUNE_RTOL:g}). Nothing was written to {out}.")
            outcome.bytes_after = tmp.stat().st_size
    except OSError as e:
        raise write_error(out, e) from None
    outcome.written = True
    return outcome


def _agrees(check: PruneCheck) -> bool:
    return check.bit_identical or check.max_abs_change <= PRUNE_RTOL * check.max_abs_output


def _plan(loaded: LoadedModel, targets: dict[str, tuple[list[int], int, int]], source: str, example: Any,
          include_smooth: bool) -> PrunePlan:
    if loaded.format == ONNX:
        from .prune_onnx import plan_prune_onnx

        return plan_prune_onnx(loaded.obj, targets, source, include_smooth)
    from ..analysis.fx_graphs import export_graph
    from .prune_torch import plan_prune_torch
    from .torch_export import graph_sites

    gm = export_graph(loaded.obj, example, "prune", "Prune an ONNX export of the model instead.")
    return plan_prune_torch(gm, dict(graph_sites(gm.graph, include_smooth)), targets, source)


def _prune(loaded: LoadedModel, plan: PrunePlan, example: Any) -> Any:
    if loaded.format == ONNX:
        from .prune_onnx import prune_onnx

        return prune_onnx(loaded.obj, plan)
    from .prune_torch import prune_torch

    return prune_torch(loaded.obj, plan, example)


def _weights(obj: Any) -> int:
    from .prune_cost import onnx_weights, torch_weights

    return onnx_weights(obj) if type(obj).__name__ == "ModelProto" else torch_weights(obj)


def _macs(obj: Any, sample: Sample) -> int:
    from .prune_cost import onnx_macs, torch_macs

    if type(obj).__name__ == "ModelProto":
        return onnx_macs(obj, {s.name: tuple(int(d or 1) for d in (s.shape or ())) for s in sample.specs})
    from .torch import example_inputs

    first = next(sample.batches(1, None)).arrays
    return torch_macs(obj, example_inputs([a[:1] for a in first], obj))


def _runner(obj: Any, device: str) -> tuple[Any, Any]:
    """(run arrays -> list of output arrays, close)."""
    if type(obj).__name__ == "ModelProto":
        from ..backends.onnx import prepare, resolve_device
        from ..backends.onnx_session import make_session

        prepared = prepare(obj, resolve_device(device))
        session = make_session(prepared.proto, resolve_device(device))
        names = [i.name for i in session.get_inputs()]

        def run_onnx(arrays: list[np.ndarray]) -> list[np.ndarray]:
            feeds = {n: np.asarray(a, prepared.input_dtypes.get(n)) for n, a in zip(names, arrays)}
            return [np.asarray(o) for o in session.run(None, feeds)]

        return run_onnx, lambda: None
    import torch
    from torch.utils._pytree import tree_flatten

    from ..backends.torch import prepare as prepare_torch
    from ..backends.torch import resolve_device as torch_device

    model = prepare_torch(obj, torch_device(device))

    def run_torch(arrays: list[np.ndarray]) -> list[np.ndarray]:
        tensors = []
        for a in arrays:
            t = torch.tensor(a)
            tensors.append((t.to(model.dtype) if t.is_floating_point() else t).to(model.device))
        with torch.inference_mode():
            y = model.forward(*tensors)
        return [t.detach().float().cpu().numpy() for t in tree_flatten(y)[0] if isinstance(t, torch.Tensor)]

    return run_torch, model.restore


def _check(original: Any, pruned: Any, sample: Sample, fresh: Sample | None, batch_size: int,
           device: str) -> PruneCheck:
    check = PruneCheck()
    (run_a, close_a), (run_b, close_b) = _runner(original, device), _runner(pruned, device)
    timer = PairTimer()  # times the sample's runs themselves (verify.py)
    first = None
    try:
        for source in [sample] + ([fresh] if fresh is not None else []):
            for batch in source.batches(batch_size):
                if source is sample:
                    rows = len(batch.arrays[0]) if batch.arrays else 0
                    first = batch.arrays if first is None else first
                    a = timer.run(0, functools.partial(run_a, batch.arrays), rows)
                    b = timer.run(1, functools.partial(run_b, batch.arrays), rows)
                else:
                    a, b = run_a(batch.arrays), run_b(batch.arrays)
                for x, y in zip(a, b):
                    x, y = x[: batch.valid], y[: batch.valid]
                    if x.shape != y.shape:
                        check.bit_identical = False
                        check.max_abs_change = float("inf")
                        continue
                    check.bit_identical &= x.tobytes() == y.tobytes()
                    if x.dtype.kind == "f" and x.size:
                        check.max_abs_change = max(check.max_abs_change,
                                                   float(np.nanmax(np.abs(x.astype(np.float64) - y))))
                        check.max_abs_output = max(check.max_abs_output, float(np.nanmax(np.abs(x))))
                if source is sample:
                    check.samples += batch.valid
                else:
                    check.fresh += batch.valid
        if first is not None:
            timer.top_up(functools.partial(run_a, first), functools.partial(run_b, first))
        check.seconds_original, check.seconds_pruned = timer.seconds()
        check.timed_batch = timer.rows
    finally:
        close_a()
        close_b()
    return check


__all__ = ["PRUNE_RTOL", "PruneOutcome", "prune_file"]
