"""Rewrite dead ReLUs so that they leak (SPEC 7): the Python API.

    import relu_doctor as rd
    report = rd.scan(module, input_shape=(3, 32, 32))
    patched = rd.patch(module, report, slope=0.01, mode="channel")

`patch` returns a new model (the given one is not changed): an nn.Module for an eager
module, an ExportedProgram for a program, a ModelProto for an ONNX model. `patch_file`
is the command: it also writes the result atomically and verifies it from the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..guest import guarded
from ..report import Report
from .plan import CHANNEL, LAYER, REVIVE, PatchPlan, SitePatch, plan_patch
from .run import PatchOutcome, ScanOptions, patch_file

__all__ = ["CHANNEL", "LAYER", "REVIVE", "PatchOutcome", "PatchPlan", "ScanOptions", "SitePatch", "patch", "patch_file",
           "plan_patch"]


@guarded
def patch(
    model: Any,
    report: Report | str | Path,
    *,
    slope: float = 0.01,
    mode: str = CHANNEL,
    min_dead_ratio: float = 0.0,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    timeout: float | None = None,
) -> Any:
    """A copy of `model` whose selected dead ReLU neurons leak (see SPEC 7).

    mode="revive" also zeroes the weights that read those neurons (SPEC 14), so the
    outputs stay the same; sites it cannot cut off are left alone, with a warning.

    `report`: a Report or the path of its JSON. `model` is what it was scanned from: an
    nn.Module, an ExportedProgram, an onnx.ModelProto or a model file path (loaded safely:
    no pickles). Site names are matched against the model's calls, so a report of another
    model is refused.
    `timeout` (seconds): UserError saying what was running when it expired (see guest.py).
    """
    report = Report.of(report)
    plan = plan_patch(report, slope=slope, mode=mode, min_dead_ratio=min_dead_ratio, select=select, ignore=ignore)
    include_smooth = report.settings.include_smooth
    if isinstance(model, (str, Path)):
        from ..loading import load_model

        model = load_model(model).obj
    if type(model).__name__ == "ModelProto":
        if mode == REVIVE:
            from .revive_onnx import revive_onnx

            patched_onnx, plan = revive_onnx(model, plan, include_smooth)
            _warn_left_alone(plan)
            return patched_onnx
        from .onnx import patch_onnx

        return patch_onnx(model, plan, include_smooth)
    from .torch import example_inputs, patch_torch

    example = example_inputs(_report_example(report), model)
    if mode == REVIVE:
        from .revive import revive_torch

        patched, plan, notes = revive_torch(model, plan, example, include_smooth)
        _warn_left_alone(plan)
    else:
        patched, notes = patch_torch(model, plan, example, include_smooth)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    _record_site_names(patched, report, plan, include_smooth)
    return patched


def _record_site_names(patched: Any, report: Report, plan: PatchPlan, include_smooth: bool) -> None:
    """The report's names on the patched model, for its scans to use (site_names.py)."""
    from .. import api
    from ..inputs import InputSpec, synthetic_sample
    from ..site_names import ATTRIBUTE, pairs_for, to_json

    specs = [InputSpec(i["name"], tuple(i["shape"]), i.get("dtype", "float32"))
             for i in report.sample.inputs]
    now = api.site_names_of(patched, synthetic_sample(specs, 2, 0, None), include_smooth,
                            report.settings.neuron_axis, "auto")
    pairs = pairs_for(now, plan.site_names)
    if pairs:
        setattr(patched, ATTRIBUTE, to_json(pairs))


def _warn_left_alone(plan: PatchPlan) -> None:
    for left in plan.left_alone:
        warnings.warn(f"revive left site {left.name} alone ({left.neurons} dead neurons): {left.reason}", stacklevel=3)


def _report_example(report: Report) -> list[Any]:
    """Two synthetic rows shaped like the report's sample: the rewrite runs the model once."""
    from ..inputs import InputSpec, synthetic_sample

    specs = [InputSpec(i["name"], tuple(i["shape"]), i.get("dtype", "float32"))
             for i in report.sample.inputs]
    sample = synthetic_sample(specs, 2, 0, None)
    return next(sample.batches(2)).arrays
