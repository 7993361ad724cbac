"""Run the sample through an original and a reloaded patched ONNX model, and check them.

The patched model's sites are found again with the backend's `find_sites` (same order
as the original's report); a copy of it also returns the input and the output of each
patched site's leak, which the checks of verify.py read. Never imports torch.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import helper

from ..inputs import Sample
from ..kinds import onnx_writer
from .onnx import elem_types
from .plan import CHANNEL, PatchPlan
from .verify import PairTimer, SiteCheck, Verification, max_abs_change, new_checks


def verify_onnx(original: onnx.ModelProto, patched: onnx.ModelProto, plan: PatchPlan, sample: Sample,
                fresh: Sample, batch_size: int, device: str = "cpu", include_smooth: bool = False) -> Verification:
    from ..backends.onnx import prepare, resolve_device
    from ..backends.onnx_instrument import make_session

    providers = resolve_device(device)
    before, after = prepare(original, providers), prepare(patched, providers)
    checks = new_checks(plan)
    result = Verification(list(checks.values()))
    fetch = _probe_outputs(patched, checks, plan, include_smooth, result)
    slopes = _slope_shapes(patched, fetch)
    names = list(dict.fromkeys(name for pair in fetch.values() for name in pair))
    sessions = [make_session(m.proto, providers) for m in (before, after)]
    probe = make_session(_with_outputs(patched, names), providers)

    def feeds(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {s.name: np.asarray(a, after.input_dtypes.get(s.name)) for s, a in zip(sample.specs, arrays)}

    def run_probe(arrays: list[np.ndarray], valid: int) -> None:
        if not names:
            return
        values = dict(zip(names, probe.run(names, feeds(arrays))))
        for index, (x, y) in fetch.items():
            check = checks[index]
            check.add(values[x][:valid], values[y][:valid], _axis(slopes.get(index), values[x].ndim, check.patch.axis))

    timer = PairTimer()
    first: dict[str, np.ndarray] | None = None
    for batch in sample.batches(batch_size, after.fixed_batch):
        fed = feeds(batch.arrays)
        first = fed if first is None else first
        rows = len(batch.arrays[0]) if batch.arrays else 0
        outputs = [[np.asarray(o)[: batch.valid] for o in timer.run(i, functools.partial(s.run, None, fed), rows)]
                   for i, s in enumerate(sessions)]
        result.max_abs_change = max(result.max_abs_change, max_abs_change(*outputs))
        run_probe(batch.arrays, batch.valid)
        result.samples += batch.valid
    for batch in fresh.batches(batch_size, after.fixed_batch):
        run_probe(batch.arrays, batch.valid)
        result.fresh += batch.valid
    if first is not None:
        timer.top_up(functools.partial(sessions[0].run, None, first), functools.partial(sessions[1].run, None, first))
    result.seconds_original, result.seconds_patched = timer.seconds()
    result.timed_batch = timer.rows
    return result


def _probe_outputs(model: onnx.ModelProto, checks: dict[int, SiteCheck], plan: PatchPlan, include_smooth: bool,
                   result: Verification) -> dict[int, tuple[str, str]]:
    """Per patched site index: the tensors (x, y) of its leaky node in the main graph."""
    from ..backends.onnx_graph import find_sites

    sites = find_sites(model, include_smooth).sites
    if len(sites) != len(plan.site_names):
        result.problems.append(f"the patched model has {len(sites)} activation sites, "
                               f"the original {len(plan.site_names)}")
        return {}
    producers = {o: n for n in model.graph.node for o in n.output}
    fetch = {}
    for index, check in checks.items():
        site = sites[index]
        want = "prelu" if check.patch.mode == CHANNEL else "leaky_relu"
        if site.scope:
            check.probed = False
            result.notes.append(f"site {check.patch.name} is inside an If branch: checked by the rescan only")
        elif site.kind != want or site.output not in producers:
            check.notes.append(f"the patched model has a {site.op} ({site.kind}) there, not a {onnx_writer(want)}")
        else:
            fetch[index] = (site.data_input, site.output)
    return fetch


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    types = elem_types(model)
    for name in names:
        if name not in existing:
            copy.graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                                   None))
    return copy


def _slope_shapes(model: onnx.ModelProto, fetch: dict[int, tuple[str, str]]) -> dict[int, tuple[int, ...]]:
    """The shape of each probed PRelu's slope input, where it is a stored tensor."""
    stored = {t.name: tuple(t.dims) for t in model.graph.initializer}
    stored.update({n.output[0]: tuple(a.t.dims) for n in model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for index, (_, y) in fetch.items():
        node = producers[y]
        if node.op_type == onnx_writer("prelu") and node.input[1] in stored:
            out[index] = stored[node.input[1]]
    return out


def _axis(slope_shape: tuple[int, ...] | None, rank: int, default: int) -> int:
    """The neuron axis of a PRelu's input: where its slopes broadcast, e.g. (C, 1, 1) on a
    rank-4 input is axis 1. A model exported from torch may hold the neurons on another
    axis than the site's report (it moves them to axis 1 around the PRelu)."""
    if not slope_shape or sum(d != 1 for d in slope_shape) != 1 or len(slope_shape) > rank:
        return default
    return rank - len(slope_shape) + next(i for i, d in enumerate(slope_shape) if d != 1)
