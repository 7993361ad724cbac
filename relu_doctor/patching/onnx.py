"""Patch an ONNX model: each selected site's node becomes the prelu kind (channel mode) or
the leaky_relu kind (layer mode); relu6 / clip sites keep their upper bound with a clip before it.

Sites are found by the ONNX backend's own `find_sites`, so names and order are the
scan's. Op types come from the kinds registry (`onnx_writer`).
The leaky node keeps the site node's name and output tensor, so a rescan names
the site as before and every consumer reads the leak. Unnamed site nodes get their
generated name written in, so inserting a Clip does not renumber later sites. Never
imports torch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..backends.onnx_graph import GraphSite, default_opset, find_sites
from ..errors import UserError
from ..kinds import onnx_writer
from .plan import CHANNEL, PatchPlan, SitePatch

INSIDE_RNN = "its activation is applied inside an RNN node, which no rewrite of the graph can reach"


def out_of_reach(site: GraphSite | None) -> str | None:
    """Why a rewrite of the main graph cannot touch this site's neurons (revive, prune), or None."""
    if site is None or site.scope:
        return "it is inside an If branch"
    if site.rnn_states:
        return INSIDE_RNN
    return None
_PROTO_LIMIT = 2**31 - 2**27  # protobuf cannot write a message of 2 GiB or more (kept: room for the graph)
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def patch_onnx(model: onnx.ModelProto, plan: PatchPlan, include_smooth: bool = False) -> onnx.ModelProto:
    """A patched copy of `model` (the given proto is not changed)."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > _PROTO_LIMIT:
        raise UserError(f"this ONNX model holds {weights / 2**30:.1f} GiB of weights: writing a patched copy "
                        "(as external data) is not supported yet",
                        "Patch a PyTorch form of the model (.pt2, or a state dict with --arch) instead.")
    new = onnx.ModelProto()
    new.CopyFrom(model)
    opset = default_opset(new)
    if plan.sites and opset < 7:
        raise UserError(f"this model uses ONNX opset {opset}; patching needs opset 7 or later (PRelu broadcasting)",
                        "Export the model with a newer opset.")
    sites = find_sites(new, include_smooth).sites
    names = [s.name for s in sites]
    if names != plan.site_names:
        raise UserError("the report's sites are not this model's activation nodes "
                        f"({len(plan.site_names)} in the report, {len(names)} in the model)",
                        "Patch with a report of this model (scan it again).")
    types = elem_types(new)
    taken = _all_names(new)
    by_name = plan.by_name()
    inside = [s.name for s in sites if s.rnn_states and s.name in by_name]
    if inside:
        raise UserError(f"site {inside[0]} cannot be patched: {INSIDE_RNN}", f"Skip it with --ignore '{inside[0]}'.")
    orphans: set[str] = set()  # inputs of replaced nodes (Clip's bounds, Max's zero)
    scopes: dict[tuple, list[GraphSite]] = {}
    for s in sites:
        scopes.setdefault(tuple(s.scope), []).append(s)
    # Deepest graphs first: rebuilding a graph's node list copies its nodes, and a branch
    # rewritten before its parent is copied along with it.
    for scope in sorted(scopes, key=len, reverse=True):
        graph = _scope_graph(new, scope)
        by_output = {s.output: s for s in scopes[scope]}
        rebuilt: list[onnx.NodeProto] = []
        for old in graph.node:
            node = onnx.NodeProto()
            node.CopyFrom(old)
            site: GraphSite | None = next((by_output[o] for o in node.output if o in by_output), None)
            if site is not None and not node.name:
                node.name = site.name  # freeze the generated name (see the module docstring)
            patch = by_name.get(site.name) if site is not None else None
            if site is None or patch is None:
                rebuilt.append(node)
                continue
            elem = types.get(site.output, onnx.TensorProto.FLOAT)
            replacement = _rewrite(new, node, site.data_input, patch, elem, opset, taken)
            orphans.update(set(node.input) - {i for n in replacement for i in n.input})
            rebuilt.extend(replacement)
        del graph.node[:]
        graph.node.extend(rebuilt)
    _drop_unused(new, orphans)
    onnx.checker.check_model(new)
    return new


def _scope_graph(model: onnx.ModelProto, scope: tuple) -> onnx.GraphProto:
    graph = model.graph
    for step in scope:  # down into If branches
        holder = graph.node[step.node_index]
        graph = next(a.g for a in holder.attribute if a.name == step.branch)
    return graph


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor shape inference can tell (float when it cannot)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]
             if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _all_names(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        names.update(t.name for t in graph.initializer)
        names.update(v.name for v in [*graph.input, *graph.output, *graph.value_info])
        for node in graph.node:
            names.update(node.output)
            names.update(node.input)
            names.add(node.name)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)

    visit(model.graph)
    return names


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, x: str, patch: SitePatch,
             elem: int, opset: int, taken: set[str]) -> list[onnx.NodeProto]:
    """The nodes that replace `node` (reading `x`): [a clip to the upper bound,] the leak
    (per-channel: the prelu kind's op; layer: the leaky_relu kind's op)."""
    if elem not in _FLOAT_TYPES:
        raise UserError(f"site {patch.name} computes {onnx.TensorProto.DataType.Name(elem)}: only float sites "
                        "can leak", f"Skip it with --ignore '{patch.name}'.")
    name, out = node.name, node.output[0]
    added: list[onnx.NodeProto] = []
    if patch.upper is not None:
        clipped = _fresh(f"{out}_upper", taken)
        upper_name = _fresh(f"{name}/upper", taken)
        clip = onnx_writer("clip")
        if node.op_type == clip and len(node.input) > 2 and node.input[2]:  # reuse its max input
            added.append(helper.make_node(clip, [x, "", node.input[2]], [clipped], name=upper_name))
        else:
            added.append(_upper_clip(model, x, clipped, patch.upper, elem, opset, upper_name, taken))
        x = clipped
    if patch.mode == CHANNEL:
        # slopes shaped to broadcast along the neuron axis: (C, 1, ..., 1)
        shape = (patch.neurons,) + (1,) * max(patch.rank - 1 - patch.axis, 0)
        dtype = helper.tensor_dtype_to_np_dtype(elem) if elem != onnx.TensorProto.BFLOAT16 else np.float32
        slopes = numpy_helper.from_array(patch.slopes().astype(dtype).reshape(shape), _fresh(f"{name}_slopes", taken))
        if elem == onnx.TensorProto.BFLOAT16:
            slopes = helper.make_tensor(slopes.name, elem, shape, patch.slopes().tolist())
        model.graph.initializer.append(slopes)  # outer scope: visible inside If branches too
        added.append(helper.make_node(onnx_writer("prelu"), [x, slopes.name], [out], name=name))
    else:
        added.append(helper.make_node(onnx_writer("leaky_relu"), [x], [out], name=name, alpha=patch.slope))
    return added


def _upper_clip(model: onnx.ModelProto, x: str, out: str, upper: float, elem: int, opset: int, name: str,
                taken: set[str]) -> onnx.NodeProto:
    """min(x, upper), as a Clip with no lower bound (not a site for the scan)."""
    clip = onnx_writer("clip")
    if opset < 11:
        return helper.make_node(clip, [x], [out], name=name, max=float(upper))
    dtype = helper.tensor_dtype_to_np_dtype(elem) if elem != onnx.TensorProto.BFLOAT16 else np.float32
    bound = numpy_helper.from_array(np.array(upper, dtype=dtype), _fresh(f"{name}_max", taken))
    if elem == onnx.TensorProto.BFLOAT16:
        bound = helper.make_tensor(bound.name, elem, [], [float(upper)])
    model.graph.initializer.append(bound)
    return helper.make_node(clip, [x, "", bound.name], [out], name=name)


def _drop_unused(model: onnx.ModelProto, names: set[str]) -> None:
    """Remove the initializers and Constant nodes among `names` that nothing reads any more."""
    used: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        used.update(o.name for o in graph.output)
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                    visit(g)

    visit(model.graph)
    unused = names - used - {i.name for i in model.graph.input}  # old exporters list weights as inputs
    if not unused:
        return
    keep = [t for t in model.graph.initializer if t.name not in unused]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    nodes = [n for n in model.graph.node if not (n.op_type == "Constant" and set(n.output) <= unused)]
    if len(nodes) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(nodes)
