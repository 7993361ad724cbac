"""Add reduction nodes after each site so onnxruntime returns per-(sample, neuron) partial sums.

Three ways to reduce a site's output y, picked per site (`plan_sites`):

- "pool" (channel axis, float32, rank >= 3, static shape; every CNN activation): only ops
  that onnxruntime's NCHWc layout keeps in its blocked layout, so tapping a Conv+ReLU
  output adds no reorder: GlobalAveragePool(y) (sum), GlobalMaxPool(y) (max), and
  GlobalAveragePool(HardSigmoid(depthwise 1x1 Conv(y, 2**23), alpha=2**127, beta=0)) for the
  count of y > 0: every float y > 0, subnormals included, becomes exactly 1 (y * 2**150 >= 2;
  both scalings by a power of two are exact, and onnxruntime fuses them into one NCHWc
  convolution with a HardSigmoid activation). Measured on a ResNet-18: a ReduceSum/Sign
  version cost 3x more, mostly in NCHWc-to-NCHW reorders.
- "reduce" (any other static shape): Reduce* ops over every axis but the sample and the
  neuron axis.
- "raw": y itself (rank <= 2, where y is already that small, or an unknown shape); the
  numpy side reduces it exactly. Also the exact re-run of a batch with non-finite values.

Outputs are (samples, neurons, ...) per batch, never the activations of a big site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..kinds import KINDS
from ..kinds import axis as neuron_axes
from .onnx_graph import GraphSite, Step, default_opset

POOL, REDUCE, RAW = "pool", "reduce", "raw"
# y * 2**23 * 2**127 >= 2 for every float y > 0, the smallest subnormal (2**-149) included;
# one gain of 2**127 (the largest power of two in float32) left subnormals as fractions of 1
_INDICATOR_GAINS = (2.0**23, 2.0**127)
MAX_POOL_POSITIONS = 2**21  # count / P round-trips exactly through float32 below this
_PREFIX = "relu_doctor::"


@dataclass
class SitePlan:
    """How one site is measured, and under which graph output names."""

    index: int
    site: GraphSite
    method: str
    axis: int | None  # neuron axis in the batched output (None: decided at run time for raw)
    shape: list[int] | None  # per-sample output shape when static
    elem_type: int  # ONNX element type of the site output (0 when unknown)
    outputs: dict[str, str] = field(default_factory=dict)  # role -> top-level output name
    pool_parts: list[str] = field(default_factory=list)  # what the "pool" output stacks, in order
    extremes: bool = False  # also per-(row, neuron) max and min (the scan's neuron_extremes)

    @property
    def neurons(self) -> int | None:
        return None if self.shape is None or self.axis is None else ([1] + self.shape)[self.axis]

    @property
    def positions(self) -> int | None:
        """Entries per sample and neuron (the rows each sample adds)."""
        if self.shape is None or self.axis is None:
            return None
        dims = [d for i, d in enumerate(self.shape, start=1) if i != self.axis]
        return int(np.prod(dims, dtype=np.int64))


def plan_sites(sites: Sequence[GraphSite], shapes: dict[str, tuple[int, list | None]],
               neuron_axis_override: str) -> tuple[list[SitePlan], list[str]]:
    """Choose pool / reduce / raw per site; sites that cannot be measured become warnings."""
    plans, warnings, unsized = [], [], []
    for i, site in enumerate(sites):
        elem_type, dims = shapes.get(site.output, (0, None))
        if site.rnn_states:
            dims = _rnn_view_dims(dims)
        static = dims is not None and len(dims) >= 1 and all(d is not None and d > 0 for d in dims)
        if dims is not None and len(dims) == 0:
            warnings.append(f"site {site.name} outputs a scalar: not measured")
            continue
        if not static and site.scope:
            warnings.append(f"site {site.name} (inside an If branch) has no static shape: not measured")
            continue
        if not static:
            plans.append(SitePlan(i, site, RAW, None, None, elem_type))
            unsized.append(site.name)
            continue
        rank = len(dims)  # type: ignore[arg-type]
        axis = neuron_axes.neuron_axis(rank, site.axis_rule, neuron_axis_override)
        plan = SitePlan(i, site, RAW, axis, list(dims[1:]), elem_type)  # type: ignore[index]
        positions = plan.positions
        if rank >= 3 and axis == 1 and elem_type == TensorProto.FLOAT and positions is not None \
                and positions <= MAX_POOL_POSITIONS:
            plan.method = POOL
        elif rank >= 3:
            plan.method = REDUCE
        plans.append(plan)
    if unsized:  # correct, but the naive way: every activation of these sites is copied out
        warnings.append(f"shape inference could not size {len(unsized)} site(s) ({', '.join(unsized[:3])}"
                        f"{', ...' if len(unsized) > 3 else ''}): their outputs are reduced on the host, slower")
    return plans, warnings


def _rnn_view_dims(dims: list | None) -> list | None:
    """The dims of a relu RNN's Y, (seq, directions, batch, hidden), viewed batch first:
    (batch, seq, directions x hidden)."""
    if dims is None or len(dims) != 4:
        return None
    seq, directions, batch, hidden = dims
    return [batch, seq, directions * hidden if directions and hidden else None]


class _Builder:
    """Emits nodes valid at the model's opset and shares the constants they need."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.opset = default_opset(model)
        self.model = model
        self.count = 0
        self.constants: dict[Any, str] = {}

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{_PREFIX}{hint}:{self.count}"

    def const(self, array: np.ndarray, key: Any) -> str:
        if key not in self.constants:
            name = self.constants[key] = self.name("const")
            self.model.graph.initializer.append(numpy_helper.from_array(array, name))
        return self.constants[key]

    def node(self, nodes: list, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, nodes: list, op: str, x: str, axes: list[int]) -> str:
        axes_as_input = self.opset >= (13 if op == "ReduceSum" else 18)
        if axes_as_input:
            return self.node(nodes, op, [x, self.const(np.array(axes, np.int64), ("axes", tuple(axes)))], keepdims=0)
        return self.node(nodes, op, [x], axes=axes, keepdims=0)

    def batch_first(self, nodes: list, y: str) -> str:
        """A relu RNN's Y, (seq, directions, batch, hidden), as (batch, seq, directions x
        hidden): the layer output torch's RNN gives batch first, [forward, backward] along
        the last axis."""
        moved = self.node(nodes, "Transpose", [y], perm=[2, 0, 1, 3])
        shape = self.const(np.array([0, 0, -1], np.int64), ("shape", (0, 0, -1)))
        return self.node(nodes, "Reshape", [moved, shape])

    def indicator(self, nodes: list, y: str, channels: int, rank: int) -> str:
        """1.0 where y > 0, else 0: min(max(y * 2**23 * 2**127, 0), 1) (a NaN row is re-run exactly:
        its sum is NaN too)."""
        first, second = _INDICATOR_GAINS
        scaled = self.depthwise(nodes, y, channels, rank, first)
        return self.node(nodes, "HardSigmoid", [scaled], alpha=second, beta=0.0)

    def depthwise(self, nodes: list, x: str, channels: int, rank: int, gain: float) -> str:
        shape = (channels, 1) + (1,) * (rank - 2)
        w = self.const(np.full(shape, gain, np.float32), ("dw", shape, gain))
        return self.node(nodes, "Conv", [x, w], group=channels, kernel_shape=[1] * (rank - 2))


def _emit(b: _Builder, plan: SitePlan, raw: bool, nodes: list, tail: list) -> list[tuple[str, str, int, int]]:
    """Nodes that reduce one site (`tail`: the ones to list after every site's, see
    _instrument_graph); returns (role, tensor, elem type, rank) per output."""
    y = plan.site.output
    if plan.site.rnn_states:
        y = b.batch_first(nodes, y)
    kind = KINDS[plan.site.kind]
    bounded = kind.bounded
    if raw or plan.method == RAW:
        rank = len(plan.shape) + 1 if plan.shape is not None else -1
        return [("raw", y, plan.elem_type, rank)]
    assert plan.shape is not None and plan.axis is not None
    rank = len(plan.shape) + 1
    f32 = TensorProto.FLOAT
    if plan.method == POOL:
        c = plan.neurons or 0
        parts = {"mean": b.node(nodes, "GlobalAveragePool", [y]), "max": b.node(nodes, "GlobalMaxPool", [y])}
        indicator = b.indicator(nodes, y, c, rank)
        parts["count_mean"] = b.node(nodes, "GlobalAveragePool", [indicator])
        if not kind.nonnegative:  # sum|y| = 2 * sum(relu(y)) - sum(y)
            parts["pos_mean"] = b.node(nodes, "GlobalAveragePool", [b.node(nodes, "Relu", [y])])
        if bounded or plan.extremes:  # "max" is per (row, neuron) already; the minimum is -max(-y)
            parts["neg_max"] = b.node(nodes, "GlobalMaxPool", [b.depthwise(nodes, y, c, rank, -1.0)])
        # One output per site: (samples, parts x neurons, 1, ...), split apart on the host.
        plan.pool_parts = list(parts)
        return [("pool", b.node(tail, "Concat", list(parts.values()), axis=1), f32, rank)]
    x = y
    if plan.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):  # float16, bfloat16: sum in float32
        x = b.node(nodes, "Cast", [y], to=f32)
    x_type = plan.elem_type if plan.elem_type == TensorProto.DOUBLE else f32
    axes = [d for d in range(1, rank) if d != plan.axis]
    exact_float = (plan.positions or 0) < 2**24
    count_type = f32 if exact_float else TensorProto.INT64
    zero = b.const(np.array(0, helper.tensor_dtype_to_np_dtype(x_type)), ("zero", x_type))
    positive = b.node(nodes, "Cast", [b.node(nodes, "Greater", [x, zero])], to=count_type)
    outs = [("count", b.reduce(nodes, "ReduceSum", positive, axes), count_type, 2),
            ("sum", b.reduce(nodes, "ReduceSum", x, axes), x_type, 2),
            # one number: a full reduction is 4x faster than one that keeps the neurons, and
            # the rows that pad a fixed batch repeat a real row, so they cannot raise it
            ("max", b.node(nodes, "ReduceMax", [x], keepdims=0), x_type, 0)]
    if not kind.nonnegative:
        outs.append(("abs", b.reduce(nodes, "ReduceL1", x, axes), x_type, 2))
    if bounded or plan.extremes:
        outs.append(("min", b.reduce(nodes, "ReduceMin", x, axes), x_type, 2))
    if plan.extremes:
        outs.append(("row_max", b.reduce(nodes, "ReduceMax", x, axes), x_type, 2))
    return outs


def instrument(model: onnx.ModelProto, plans: Sequence[SitePlan], raw: bool = False) -> onnx.ModelProto:
    """A copy of `model` whose extra outputs are the plans' reductions (`raw`: the site outputs
    themselves, for the exact path). Fills each plan's `outputs` (role -> output name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    b = _Builder(out)
    by_scope: dict[tuple[Step, ...], list[SitePlan]] = {}
    for plan in plans:
        plan.outputs = {}
        by_scope.setdefault(plan.site.scope, []).append(plan)
    existing = {o.name for o in out.graph.output}
    for role, name, elem_type, _rank, plan in _instrument_graph(out.graph, (), by_scope, b, raw):
        plan.outputs[role] = name
        if name not in existing:
            existing.add(name)
            out.graph.output.append(_output_info(name, elem_type))
    return out


def _instrument_graph(graph: onnx.GraphProto, path: tuple[Step, ...], by_scope: dict, b: _Builder,
                      raw: bool) -> list[tuple[str, str, int, int, SitePlan]]:
    """Instrument one graph and the If branches below it; returns the outputs to export."""
    mine = {p.site.output: p for p in by_scope.get(path, [])}
    below = {s[len(path)].node_index for s in by_scope if len(s) > len(path) and s[: len(path)] == path}
    exported: list[tuple[str, str, int, int, SitePlan]] = []
    nodes: list[onnx.NodeProto] = []
    tails: list[list[onnx.NodeProto]] = []  # each site's last node(s), in site order
    for index, node in enumerate(graph.node):
        if index in below:
            exported += _instrument_if(node, index, path, by_scope, b, raw)
        nodes.append(node)
        for tensor in node.output:
            if tensor in mine:
                plan = mine[tensor]
                group: list[onnx.NodeProto] = []
                for role, name, elem_type, rank in _emit(b, plan, raw, nodes, group):
                    if path and name == tensor:  # a branch cannot export a tensor under the same name twice
                        name = b.node(group, "Identity", [tensor])
                    exported.append((role, name, elem_type, rank, plan))
                tails.append(group)
    # Where the reductions run decides how long each activation stays in memory, and
    # onnxruntime picks the order. Its PRIORITY_BASED order (onnx_session.make_session) runs the ready node
    # listed first: reductions listed right after their site run right after it. But the
    # NCHWc layout pass renumbers nodes in its own order, a depth-first walk back from the
    # graph's leaves, the last-listed leaf first: so each site's last node (its leaf) is
    # listed at the end, the first site's last. With the reductions listed at the end, they
    # ran up to 10 layers late on a ResNet-18 and peak memory doubled.
    nodes += [n for group in reversed(tails) for n in group]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return exported


def _instrument_if(node: onnx.NodeProto, index: int, path: tuple[Step, ...], by_scope: dict, b: _Builder,
                   raw: bool) -> list[tuple[str, str, int, int, SitePlan]]:
    """Both branches must return the same outputs: each returns its own reductions and an
    empty tensor (0 samples) in place of the other's, so an untaken branch adds nothing."""
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    found = {name: _instrument_graph(g, path + (Step(index, name),), by_scope, b, raw)
             for name, g in branches.items()}
    exported = []
    for owner, outs in found.items():
        for role, name, elem_type, rank, plan in outs:
            for branch_name, g in branches.items():
                produced = name
                if branch_name != owner:
                    produced = b.name("empty")
                    dtype = helper.tensor_dtype_to_np_dtype(elem_type)  # no samples (a scalar max: -inf)
                    empty = np.full((), -np.inf, dtype) if rank == 0 else np.zeros([0] * max(rank, 1), dtype)
                    g.node.append(helper.make_node("Constant", [], [produced],
                                                   value=numpy_helper.from_array(empty)))
                g.output.append(_output_info(produced, elem_type))
            up = b.name("if")
            node.output.append(up)
            exported.append((role, up, elem_type, rank, plan))
    return exported


def _output_info(name: str, elem_type: int) -> onnx.ValueInfoProto:
    if elem_type == TensorProto.UNDEFINED:  # a raw output whose type inference did not find
        return onnx.ValueInfoProto(name=name)
    return helper.make_tensor_value_info(name, elem_type, None)
