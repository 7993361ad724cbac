"""Prune dead channels of an ONNX model by graph surgery on its initializers (never imports torch).

Per site: the producer chain Conv / Gemm / MatMul+Add (-> BatchNormalization) -> site,
each tensor read by the next node only, with weights that are initializers read by one
node; and the consumers found as `patch --mode revive` finds them. The channels are
removed from the producer's output, the BatchNorm tensors and the consumers' inputs;
value_info is dropped (its channel counts are stale) and shape inference checks the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..backends.onnx_graph import find_sites
from .onnx import out_of_reach
from .plan import LeftAlone
from .prune_plan import PruneGroup, PrunePlan
from .revive_onnx import _consumers, _shapes


def plan_prune_onnx(model: onnx.ModelProto, targets: dict[str, tuple[list[int], int, int]], source: str,
                    include_smooth: bool = False) -> PrunePlan:
    """`targets`: site name -> (neurons to remove, neuron axis, neurons of the site)."""
    graph = model.graph
    sites = {s.name: s for s in find_sites(model, include_smooth).sites}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    producers = {o: n for n in graph.node for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    constants = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    outputs = {o.name for o in graph.output}
    shapes = _shapes(model)
    plan = PrunePlan(source)
    for name, (neurons, axis, total) in targets.items():
        site = sites.get(name)
        reason = out_of_reach(site)
        if reason is not None:
            plan.left_alone.append(LeftAlone(name, len(neurons), reason))
            continue
        assert site is not None  # out_of_reach gives a reason for a missing one
        if len(neurons) >= total:
            plan.left_alone.append(LeftAlone(name, len(neurons), "every neuron of the site is dead: removing them "
                                             "all would leave an empty layer"))
            continue
        chain = _chain(producers[site.output], producers, readers, inits, shapes, axis)
        if isinstance(chain, str):
            plan.left_alone.append(LeftAlone(name, len(neurons), chain))
            continue
        found = _consumers(site.output, axis, readers, outputs, set(inits), shapes, constants)
        if isinstance(found, str):
            plan.left_alone.append(LeftAlone(name, len(neurons), found))
            continue
        if any(c.kind == "conv" and c.groups != 1 for c in found):
            plan.left_alone.append(LeftAlone(name, len(neurons), "a grouped convolution reads them"))
            continue
        producer, bias, bn = chain
        plan.groups.append(PruneGroup(name, sorted(neurons), total, producer, bias, bn,
                                      [(c.initializer, c.kind, c.block, c.groups) for c in found]))
    return plan


def _chain(site_node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], readers: dict[str, list[onnx.NodeProto]],
           inits: dict[str, Any], shapes: dict[str, list[int]], axis: int) -> tuple[str, str | None, list[str]] | str:
    """(producer weight "name:dim", bias "name:dim", BatchNorm tensors) or why not."""
    data = next((i for i in site_node.input if i and i not in inits), None)
    if data is None or data not in producers:
        return "its input is not a layer's output"

    def single(name: str) -> bool:
        return len(readers.get(name, [])) == 1

    def owned(name: str) -> bool:
        return name in inits and single(name)

    if not single(data):
        return "its input is also read elsewhere (a residual branch)"
    node = producers[data]
    bn: list[str] = []
    if node.op_type == "BatchNormalization":
        if not all(owned(n) for n in node.input[1:5]):
            return "its BatchNormalization's tensors are computed or shared"
        bn = [f"{n}:0" for n in node.input[1:5]]
        if node.input[0] not in producers or not single(node.input[0]):
            return "the BatchNormalization's input is also read elsewhere"
        node = producers[node.input[0]]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv" and axis == 1:
        if attrs.get("group", 1) != 1:
            return "its producing Conv is grouped (its channels are tied to its inputs)"
        if not owned(node.input[1]) or (len(node.input) > 2 and node.input[2] and not owned(node.input[2])):
            return "its producing Conv's weights are computed or shared"
        bias = f"{node.input[2]}:0" if len(node.input) > 2 and node.input[2] else None
        return f"{node.input[1]}:0", bias, bn
    if node.op_type == "Gemm" and not bn:
        if not owned(node.input[1]) or (len(node.input) > 2 and node.input[2] and not owned(node.input[2])):
            return "its producing Gemm's weights are computed or shared"
        bias = None
        if len(node.input) > 2 and node.input[2]:
            dims = list(inits[node.input[2]].dims)
            if len(dims) == 2 and dims[0] == 1:
                bias = f"{node.input[2]}:1"
            elif len(dims) == 1 and dims[0] > 1:
                bias = f"{node.input[2]}:0"
            elif dims not in ([], [1], [1, 1]):
                return "its producing Gemm's bias has an unusual shape"
        return f"{node.input[1]}:{0 if attrs.get('transB', 0) else 1}", bias, bn
    if node.op_type == "Add" and not bn:
        consts = [i for i in node.input if i in inits]
        others = [i for i in node.input if i not in inits]
        if len(consts) != 1 or len(others) != 1 or not owned(consts[0]) or others[0] not in producers:
            return "its input comes from an Add that is not a bias (a residual add ties its channels)"
        matmul = producers[others[0]]
        if matmul.op_type != "MatMul" or not single(others[0]) or not owned(matmul.input[1]) or \
                len(inits[matmul.input[1]].dims) != 2 or len(inits[consts[0]].dims) != 1:
            return "its input comes from an Add that is not a bias (a residual add ties its channels)"
        return f"{matmul.input[1]}:1", f"{consts[0]}:0", bn
    if node.op_type == "MatMul" and not bn and owned(node.input[1]) and len(inits[node.input[1]].dims) == 2:
        return f"{node.input[1]}:1", None, bn
    return f"its input comes from {node.op_type}, which ties its channels to other layers"


def prune_onnx(model: onnx.ModelProto, plan: PrunePlan) -> onnx.ModelProto:
    """A pruned copy of `model`."""
    new = onnx.ModelProto()
    new.CopyFrom(model)
    index = {t.name: i for i, t in enumerate(new.graph.initializer)}

    def cut(spec: str, keep: list[int]) -> None:
        name, _, dim = spec.rpartition(":")
        t = new.graph.initializer[index[name]]
        new.graph.initializer[index[name]].CopyFrom(
            numpy_helper.from_array(np.take(numpy_helper.to_array(t), keep, axis=int(dim)), name))

    for group in plan.groups:
        keep = [i for i in range(group.total) if i not in set(group.neurons)]
        for spec in [group.producer, *([group.producer_bias] if group.producer_bias else []), *group.batch_norm]:
            cut(spec, keep)
        for weight, kind, block, _groups in group.consumers:
            cols = [c * block + j for c in keep for j in range(block)]
            cut(f"{weight}:{0 if kind == 'rows' else 1}", cols)
    del new.graph.value_info[:]  # channel counts there are stale now
    onnx.checker.check_model(new)
    onnx.shape_inference.infer_shapes(new, strict_mode=True)
    return new
