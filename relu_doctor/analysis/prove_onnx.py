"""Data-free proofs for ONNX models: onnx_bounds twice (inputs unbounded, then in the range)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from ..backends.onnx_graph import find_sites
from .onnx_bounds import TOP, Box, OnnxBounds
from .proof import ProofResult, add_saturated, neuron_lower, neuron_upper, site_proof, unit_roundoff

_FLOAT = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64",
          onnx.TensorProto.BFLOAT16: "bfloat16"}


def prove_onnx(model: onnx.ModelProto, inputs: list[dict[str, Any]], sites: list[Any],
               input_range: tuple[float, float] | None, include_smooth: bool = False) -> ProofResult:
    """Proofs per site of an ONNX model; `inputs` and `sites` come from the scan's report."""
    graph_sites = {s.name: s for s in find_sites(model, include_smooth).sites}
    dtype = _dtype(model)
    u = unit_roundoff(dtype)
    unbounded = float(np.finfo(np.dtype(dtype if dtype != "bfloat16" else "float32")).max)
    structural = _run(model, inputs, (-unbounded, unbounded), u)
    ranged = None
    if input_range is not None:
        ranged = _run(model, inputs, (max(input_range[0], -unbounded), min(input_range[1], unbounded)), u)
    producers = {o: n for n in model.graph.node for o in n.output}
    result = ProofResult({}, input_range, "onnx")
    for site in sites:
        g = graph_sites.get(site.name)
        if g is None or g.scope:
            result.warnings.append(f"site {site.name}: inside a subgraph (If branch), nothing proven")
            continue
        if g.rnn_states:  # Y is (seq, dirs, batch, hidden), not the site's batch-first view: a box on it
            # (onnx_bounds has no RNN rule today) would not line up with the site's neurons
            result.sites[site.name] = site_proof(None, None, None)
            continue
        s_hi = _upper(structural.values.get(g.output), site)
        r_hi = _upper(ranged.values.get(g.output), site) if ranged is not None else None
        if s_hi is None and r_hi is None:
            result.sites[site.name] = site_proof(None, None, None)
            continue
        node = producers.get(g.output)
        x = structural.values.get(_data_input(node, structural)) if node is not None else None
        lows = [_lower(structural.values.get(g.output), site),
                _lower(ranged.values.get(g.output), site) if ranged is not None else None]
        result.sites[site.name] = add_saturated(site_proof(s_hi, r_hi, _rules(x, site)), lows, site.upper_bound)
    lost = {**structural.lost, **(ranged.lost if ranged is not None else {})}
    if lost:
        result.warnings.append(f"no interval rule for {', '.join(sorted(lost))}: bounds after them are unbounded "
                               "(sound, less precise)")
    return result


def _run(model: onnx.ModelProto, inputs: list[dict[str, Any]], bounds: tuple[float, float], u: float) -> OnnxBounds:
    declared = {i.name: i for i in model.graph.input}
    feeds: dict[str, Any] = {}
    for spec in inputs:
        value = declared.get(spec["name"])
        batch = 1
        if value is not None and value.type.tensor_type.shape.dim:
            first = value.type.tensor_type.shape.dim[0]
            batch = first.dim_value if first.HasField("dim_value") and first.dim_value > 0 else 1
        shape = (batch, *spec["shape"])
        if value is not None and value.type.tensor_type.elem_type not in _FLOAT:
            feeds[spec["name"]] = TOP  # token ids and other integer inputs: any value
        else:
            feeds[spec["name"]] = Box(np.full(shape, bounds[0]), np.full(shape, bounds[1]))
    run = OnnxBounds(model, u)
    run.run(feeds)
    return run


def _dtype(model: onnx.ModelProto) -> str:
    for t in model.graph.initializer:
        if t.data_type in _FLOAT:
            return _FLOAT[t.data_type]
    return "float32"


def _data_input(node: onnx.NodeProto, run: OnnxBounds) -> str:
    for name in node.input:
        if name and not isinstance(run.values.get(name), np.ndarray):
            return name
    return node.input[0]


def _upper(value: Any, site: Any) -> np.ndarray | None:
    if not isinstance(value, Box):
        return None
    return neuron_upper(value.hi, list(site.shape), site.axis)


def _lower(value: Any, site: Any) -> np.ndarray | None:
    if not isinstance(value, Box):
        return None
    return neuron_lower(value.lo, list(site.shape), site.axis)


def _rules(x: Any, site: Any) -> np.ndarray | None:
    if not isinstance(x, Box) or x.why is None:
        return None
    axis, mask, rule = x.why
    if axis != site.axis or mask.size != site.neurons:
        return None
    return np.where(mask, rule, "")
