"""`patch --mode revive` for ONNX: the leak of patch_onnx, plus zeroed consumer weights.

From a site's output tensor the walk follows every node that reads it: nodes that keep
channels apart (pooling, Dropout, Identity, a ReduceMean over positions, Flatten) pass
the neurons on; a Conv, Gemm or MatMul whose weight is an initializer read by no other
node is a consumer, and the weight's input channels for the dead neurons are zeroed.
Any other reader (Add, Concat, Mul, a graph output) leaves the site alone, with the
reason. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis.ties import TIES
from ..backends.onnx_graph import find_sites
from ..errors import UserError
from .onnx import out_of_reach, patch_onnx
from .plan import LeftAlone, PatchPlan

_LOCAL = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Dropout", "Identity", "Cast",
                    "LpPool"})
_ELEMENTWISE = frozenset({"Dropout", "Identity", "Cast"})


@dataclass(frozen=True)
class _Cut:
    initializer: str
    kind: str  # conv, rows (Gemm transB=0 / MatMul: B[in, out]), cols (Gemm transB=1: B[out, in])
    block: int
    groups: int = 1


def revive_onnx(model: onnx.ModelProto, plan: PatchPlan, include_smooth: bool = False) -> tuple[onnx.ModelProto,
                                                                                                 PatchPlan]:
    """The revived copy of `model` and the plan as carried out."""
    sites = {s.name: s for s in find_sites(model, include_smooth).sites}
    if [s for s in sites] != plan.site_names:
        raise UserError("the report's sites are not this model's activation nodes",
                        "Patch with a report of this model (scan it again).")
    shapes = _shapes(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    initializers = {t.name for t in model.graph.initializer}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.attribute:
            try:
                constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            except Exception:  # value_float(s) / value_int(s): not axes we need
                pass
    kept, cuts, left = [], [], list(plan.left_alone)
    zeroed: dict[str, list[str]] = {}
    for p in plan.sites:
        site = sites[p.name]
        found: list[_Cut] | str = out_of_reach(site) or _consumers(site.output, p.axis, readers, outputs,
                                                                   initializers, shapes, constants)
        if isinstance(found, str):
            left.append(LeftAlone(p.name, len(p.dead), found))
            continue
        kept.append(p)
        cuts += [(c, list(p.dead)) for c in found]
        zeroed[p.name] = [c.initializer for c in found]
    done = replace(plan, sites=kept, left_alone=left, zeroed=zeroed)
    if not kept:
        return model, done
    patched = patch_onnx(model, done, include_smooth)
    by_name = {t.name: i for i, t in enumerate(patched.graph.initializer)}
    for cut, neurons in cuts:
        index = by_name[cut.initializer]
        w = numpy_helper.to_array(patched.graph.initializer[index]).copy()
        _zero(w, cut, neurons)
        patched.graph.initializer[index].CopyFrom(numpy_helper.from_array(w, cut.initializer))
    onnx.checker.check_model(patched)
    return patched, done


def _zero(w: np.ndarray, cut: _Cut, neurons: list[int]) -> None:
    for n in neurons:
        cols = slice(n * cut.block, (n + 1) * cut.block)
        if cut.kind == "rows":
            w[cols, ...] = 0
        elif cut.kind == "cols":
            w[:, cols] = 0
        else:
            per_in, per_out = w.shape[1], w.shape[0] // cut.groups
            g = n // per_in
            w[g * per_out:(g + 1) * per_out, n % per_in] = 0


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    out = {}
    for v in [*g.value_info, *g.input, *g.output]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            out[v.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
    return out


def _consumers(start: str, axis: int, readers: dict[str, list[onnx.NodeProto]], outputs: set[str],
               initializers: set[str], shapes: dict[str, list[int]],
               constants: dict[str, np.ndarray]) -> list[_Cut] | str:
    cuts: list[_Cut] = []
    todo = [(start, axis, 1)]
    while todo:
        name, ax, block = todo.pop()
        if name in outputs:
            return "they reach the model's output"
        for node in readers.get(name, []):
            found = _step(node, name, ax, block, readers, initializers, shapes, constants)
            if isinstance(found, str):
                return found
            if isinstance(found, _Cut):
                cuts.append(found)
            else:
                todo.append(found)
    return cuts or "no Conv, Gemm or MatMul reads them"


def _step(node: onnx.NodeProto, x: str, axis: int, block: int, readers: dict[str, list[onnx.NodeProto]],
          initializers: set[str], shapes: dict[str, list[int]],
          constants: dict[str, np.ndarray]) -> _Cut | tuple[str, int, int] | str:
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rank = len(shapes.get(x, [])) or None
    if op in TIES:
        return f"{TIES[op]} ({node.name})"
    if not node.input or node.input[0] != x:
        return f"{op} {node.name} reads them (not as its data input)"
    if op in _ELEMENTWISE or (op in _LOCAL and axis == 1):
        return (node.output[0], axis, block)
    if op == "ReduceMean" and axis == 1:
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:  # opset 18: axes as an input
            if node.input[1] not in constants:
                return f"{op} {node.name} with computed axes reads them"
            axes = [int(a) for a in np.ravel(constants[node.input[1]])]
        if axes and rank and all(a % rank > 1 for a in axes):
            return (node.output[0], 1, block)
        return f"{op} {node.name} reduces over the neuron axis"
    if op in ("Flatten", "Reshape") and axis == 1:
        before, after = shapes.get(x), shapes.get(node.output[0])
        if before and after and len(after) == 2 and -1 not in before[1:] and (op == "Reshape" or
                                                                            attrs.get("axis", 1) == 1):
            return (node.output[0], 1, block * int(np.prod(before[2:], dtype=np.int64)))
        return f"{op} {node.name} reshapes them"
    weight = node.input[1] if len(node.input) > 1 else ""
    if op in ("Conv", "Gemm", "MatMul"):
        if weight not in initializers:
            return f"{op} {node.name} with a computed weight reads them"
        if len(readers.get(weight, [])) > 1:
            return f"the weight {weight} is shared with another node"
    if op == "Conv" and axis == 1 and block == 1:
        return _Cut(weight, "conv", 1, int(attrs.get("group", 1)))
    if op == "Gemm" and axis == 1 and not attrs.get("transA", 0):
        return _Cut(weight, "cols" if attrs.get("transB", 0) else "rows", block)
    if op == "MatMul" and rank is not None and axis == rank - 1 and len(shapes.get(weight, [0, 0])) <= 2:
        return _Cut(weight, "rows", block)
    return f"{op} {node.name} reads them"
