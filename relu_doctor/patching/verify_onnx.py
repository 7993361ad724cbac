"""Check a reloaded patched ONNX model: on the sample during its rescan (RescanChecks, see
verify_pass.py), on fresh random inputs in a session of its own.

The patched model's sites are found again with the backend's `find_sites` (same order
as the original's report); the rescan's instrumented graph (and the fresh inputs' copy
of the model) also returns the input and the output of each patched site's leak, which
the checks of verify.py read. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..inputs import Sample
from ..kinds import onnx_writer
from .onnx import elem_types
from .plan import CHANNEL, PatchPlan
from .verify import SiteCheck, Verification
from .verify_pass import OutputRecorder, RescanObserver


class RescanChecks(RescanObserver):
    """Observer of the rescan of the written model (a backends.CaptureObserver): the
    instrumented graph also returns the input and output of each probed leak."""

    def __init__(self, patched: onnx.ModelProto, checks: dict[int, SiteCheck], plan: PatchPlan,
                 result: Verification, recorded: OutputRecorder | None, include_smooth: bool = False) -> None:
        super().__init__(result, recorded)
        self.checks = checks
        self.fetch = _probe_outputs(patched, checks, plan, include_smooth, result)
        self.slopes = _slope_shapes(patched, self.fetch)
        self.names = list(dict.fromkeys(name for pair in self.fetch.values() for name in pair))
        self.types = elem_types(patched) if self.names else {}

    def on_call(self, call: Any) -> None:
        pass

    def onnx_fetch(self, proto: onnx.ModelProto) -> list[str]:
        _add_outputs(proto, self.names, self.types)
        return self.names

    def check_fetched(self, fetched: dict[str, Any], valid: int) -> None:
        _check(self.checks, self.fetch, self.slopes, fetched, valid)

    def finish(self) -> None:
        self.timings()


def _check(checks: dict[int, SiteCheck], fetch: dict[int, tuple[str, str]], slopes: dict[int, tuple[int, ...]],
           values: dict[str, np.ndarray], valid: int) -> None:
    for index, (x, y) in fetch.items():
        check = checks[index]
        check.add(values[x][:valid], values[y][:valid], _axis(slopes.get(index), values[x].ndim, check.patch.axis))


def check_fresh(patched: onnx.ModelProto, observer: RescanChecks, fresh: Sample, batch_size: int,
                result: Verification, device: str = "cpu") -> None:
    """Run the fresh random inputs through the patched model (returning each probed leak's
    input and output) and check them."""
    from ..backends.onnx import prepare, resolve_device
    from ..backends.onnx_session import make_session

    if not observer.names:
        result.fresh += fresh.count
        return
    after = prepare(patched, resolve_device(device))
    probe = make_session(_with_outputs(patched, observer.names, observer.types), after.providers)
    for batch in fresh.batches(batch_size, after.fixed_batch):
        values = dict(zip(observer.names, probe.run(observer.names, _feeds(after, fresh, batch.arrays))))
        _check(observer.checks, observer.fetch, observer.slopes, values, batch.valid)
        result.fresh += batch.valid


def batch_outputs(model: onnx.ModelProto, sample: Sample, batch_size: int,
                  device: str = "cpu") -> Iterator[list[np.ndarray]]:
    """The model's outputs on the sample, batch by batch, sample rows only (for a comparison
    when the original's outputs were too large to keep from its scan)."""
    from ..backends.onnx import prepare, resolve_device
    from ..backends.onnx_session import make_session

    prepared = prepare(model, resolve_device(device))
    session = make_session(prepared.proto, prepared.providers)
    for batch in sample.batches(batch_size, prepared.fixed_batch):
        yield [np.asarray(o)[: batch.valid] for o in session.run(None, _feeds(prepared, sample, batch.arrays))]


def _feeds(model: Any, sample: Sample, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {s.name: np.asarray(a, model.input_dtypes.get(s.name)) for s, a in zip(sample.specs, arrays)}


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


def _with_outputs(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _add_outputs(copy, names, types)
    return copy


def _add_outputs(model: onnx.ModelProto, names: list[str], types: dict[str, int]) -> None:
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                                    None))


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
