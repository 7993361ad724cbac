"""Find the activation sites of an ONNX graph, in execution order, with their neuron-axis rule.

What counts as a site is decided by the kinds registry (`classify_onnx` for single
nodes, kinds/onnx_patterns/ for written-out activations such as hard-swish, SiLU and
Max(x, 0)); this module reads the graph around each node for them: constant inputs
(initializers, Constant nodes), producers and consumers, where each tensor's neuron axis
is (kinds/axis.py), and the If / Loop / Scan subgraphs that a site may live in.
"""

from __future__ import annotations

import heapq
from collections import ChainMap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..kinds import ABSENT, KINDS, ONNX_CANDIDATE_OPS, Activation, classify_onnx
from ..kinds import axis as neuron_axes
from ..kinds.onnx_fused import FUSED_OP_TYPES, holds_activation, is_relu_rnn
from ..kinds.onnx_patterns import PATTERN_OPS, match_pattern

_DEFAULT_DOMAINS = ("", "ai.onnx")
_BRANCHES = ("then_branch", "else_branch")
_SMALL = 64  # constants larger than this are never a bound or a zero: skip converting them


@dataclass(frozen=True)
class Step:
    """One step down into a subgraph: the If node (by index in its graph) and the branch."""

    node_index: int
    branch: str  # "then_branch" | "else_branch"


@dataclass
class GraphSite:
    """A site found in the graph: what to measure and where it lives."""

    name: str
    kind: str
    op: str
    params: dict[str, float]
    output: str  # the tensor measured
    scope: tuple[Step, ...] = ()  # If branches from the main graph down to the site
    axis_rule: int | None = None  # the neuron-axis tag from the producer walk (kinds/axis.py), None if unknown
    data_input: str = ""  # the tensor the activation reads (what a leak reads)
    # a relu RNN node's Y (kinds/onnx_fused.py), (seq, directions, batch, hidden): the
    # instrumented graph measures it viewed as (batch, seq, directions x hidden); no patch
    # can reach an activation inside the node. (onnxruntime runs no RNN of layout 1.)
    rnn_states: bool = False


@dataclass
class _Scope:
    """One (sub)graph with name lookups that see the enclosing graphs too."""

    graph: onnx.GraphProto
    constants: ChainMap  # tensor name -> TensorProto or np.ndarray
    producers: ChainMap  # tensor name -> NodeProto
    consumers: dict[str, list[onnx.NodeProto]]
    tags: ChainMap  # tensor name -> neuron-axis tag (kinds/axis.py)
    path: tuple[Step, ...] = ()
    prefix: str = ""  # name prefix for unnamed nodes of subgraphs
    in_loop: bool = False
    shapes: dict[str, list | None] = field(default_factory=dict)  # tensor name -> dims, where known

    def child(self, graph: onnx.GraphProto, step: Step | None, prefix: str, in_loop: bool) -> _Scope:
        return _Scope(graph, self.constants.new_child(), self.producers.new_child(), {}, self.tags.new_child(),
                      self.path + ((step,) if step else ()), prefix, in_loop, self.shapes)

    # the GraphView the ONNX patterns read (kinds/onnx_patterns)
    def constant(self, name: str) -> Any:
        return _constant(self, name)

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self.producers.get(name)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        is_output = any(o.name == name for o in self.graph.output)
        return users[0] if len(users) == 1 and not is_output else None


@dataclass
class SiteSearch:
    """The result: measurable sites in execution order, and what could not be measured."""

    sites: list[GraphSite] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)  # sites that exist but cannot be measured


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return 1


def topological(graph: onnx.GraphProto) -> list[int]:
    """Node indices in execution order (stable: the file's order where it is already valid)."""
    produced_by: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                produced_by[out] = i
    waiting = [0] * len(graph.node)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        deps = {produced_by[name] for name in _node_inputs(node) if name in produced_by}
        deps.discard(i)
        waiting[i] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(graph.node):  # a cycle: leave the rest in file order; onnxruntime will refuse it
        done = set(order)
        order += [i for i in range(len(graph.node)) if i not in done]
    return order


def _node_inputs(node: onnx.NodeProto) -> Iterator[str]:
    """A node's inputs, including the outer-scope names its subgraphs read."""
    yield from (name for name in node.input if name)
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield from _outer_names(attr.g)


def _outer_names(graph: onnx.GraphProto) -> Iterator[str]:
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    for node in graph.node:
        for name in _node_inputs(node):
            if name not in local:
                yield name


def find_sites(model: onnx.ModelProto, include_smooth: bool = False,
               shapes: dict[str, list | None] | None = None) -> SiteSearch:
    """Every site of `model` in execution order; sites inside Loop/Scan bodies become warnings.

    `shapes` (tensor name -> dims, from shape inference) lets the neuron axis follow
    reshapes; without it, only transposes are followed."""
    graph = model.graph
    root = _Scope(graph, ChainMap(), ChainMap(), {}, ChainMap(), shapes=shapes or {})
    search = SiteSearch()
    names: dict[str, int] = {}
    _walk(root, include_smooth, search, names)
    return search


def _index_scope(scope: _Scope) -> None:
    g = scope.graph
    for t in g.initializer:
        scope.constants[t.name] = t
    for inp in g.input:  # a graph input shadows an outer constant of the same name
        if inp.name not in scope.constants.maps[0]:
            scope.constants.maps[0][inp.name] = None
    for node in g.node:
        for out in node.output:
            scope.producers[out] = node
        for name in set(_node_inputs(node)):  # subgraphs reading a tensor use it too
            scope.consumers.setdefault(name, []).append(node)
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
            scope.constants[node.output[0]] = node
    for out in g.output:
        scope.consumers.setdefault(out.name, [])


def _walk(scope: _Scope, include_smooth: bool, search: SiteSearch, names: dict[str, int]) -> None:
    _index_scope(scope)
    g = scope.graph
    for index in topological(g):
        node = g.node[index]
        _tag(scope, node)
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            label = f"{_base_name(scope, node, index)}/{attr.name}"
            if node.op_type == "If" and attr.name in _BRANCHES and not scope.in_loop:
                child = scope.child(attr.g, Step(index, attr.name), label, False)
            else:
                child = scope.child(attr.g, None, label, True)
            _walk(child, include_smooth, search, names)
        attrs = _attributes(node) if node.op_type in FUSED_OP_TYPES else {}
        if attrs and holds_activation(node.domain, node.op_type, attrs):
            name = _unique(_base_name(scope, node, index), names)
            if is_relu_rnn(node.domain, node.op_type, attrs, node.output) and not scope.in_loop:
                search.sites.append(GraphSite(name, "relu", node.op_type, {}, node.output[0], scope.path,
                                              neuron_axes.LAST, rnn_states=True))
                continue
            search.warnings.append(f"site {name} ({node.op_type}) applies a ReLU-family activation inside the "
                                   "node: not measured")
            search.unmeasured.append(name)
            continue
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        found = _classify(scope, node, include_smooth)
        if found is None:
            continue
        activation, measured, data_input = found  # a written-out activation is measured at its last node
        name = _unique(_base_name(scope, node, index), names)
        if scope.in_loop:
            search.warnings.append(f"site {name} ({node.op_type}) is inside a Loop/Scan body: not measured")
            search.unmeasured.append(name)
            continue
        out = measured.output[0]
        search.sites.append(GraphSite(name, activation.kind, node.op_type, dict(activation.params), out,
                                      scope.path, scope.tags.get(out), data_input))


def _classify(scope: _Scope, node: onnx.NodeProto,
              include_smooth: bool) -> tuple[Activation, onnx.NodeProto, str] | None:
    """The activation this node applies, the node whose output to measure and the
    activation's data input, or None."""
    op = node.op_type
    if op in PATTERN_OPS:
        found = match_pattern(scope, node, include_smooth)
        if found is not None:
            return (found.activation, found.measured, found.data_input) if found.activation else None
    if op not in ONNX_CANDIDATE_OPS:
        return None
    activation = classify_onnx(op, _attributes(node), [_constant(scope, n) if n else ABSENT for n in node.input],
                               include_smooth)
    if activation is None or (KINDS[activation.kind].smooth and not include_smooth):
        return None
    return activation, node, node.input[0]


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.type != onnx.AttributeProto.GRAPH}


def _constant(scope: _Scope, name: str, depth: int = 0) -> Any:
    """The value of a constant tensor (follows Identity / Cast), None if computed at run time."""
    source = scope.constants.get(name)
    if source is None:
        producer = scope.producers.get(name)
        if producer is not None and producer.op_type in ("Identity", "Cast") and depth < 8 and producer.input:
            value = _constant(scope, producer.input[0], depth + 1)
            if value is not None and producer.op_type == "Cast":
                to = _attributes(producer).get("to")
                value = value.astype(helper.tensor_dtype_to_np_dtype(to)) if to else value
            return value
        return None
    try:
        if isinstance(source, onnx.TensorProto):
            return _small_array(source)
        attrs = _attributes(source)  # a Constant node
        for key in ("value_float", "value_int"):
            if key in attrs:
                return np.array(attrs[key])
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                return np.array(attrs[key])
        if "value" in attrs:
            return _small_array(attrs["value"])
    except Exception:  # external data not loaded, odd types: treat as computed
        return None
    return None


def _small_array(t: onnx.TensorProto) -> np.ndarray | None:
    if int(np.prod(t.dims, dtype=np.int64)) > _SMALL:
        return None
    return numpy_helper.to_array(t)


def _tag(scope: _Scope, node: onnx.NodeProto) -> None:
    """Follow where each tensor's neuron axis is (the neuron-axis rule, kinds/axis.py)."""
    role, tag = neuron_axes.onnx_role(node.op_type)
    if role == neuron_axes.FOLLOWER:
        tag = next((scope.tags[i] for i in node.input if i in scope.tags), None)
    elif role == neuron_axes.LAYOUT:
        source = node.input[0] if node.input else ""
        if source not in scope.tags:
            return
        shapes = scope.shapes
        tag = neuron_axes.onnx_layout(node.op_type, scope.tags[source], _attributes(node), shapes.get(source),
                                      shapes.get(node.output[0]) if node.output else None)
    if tag is not None:
        for out in node.output:
            if out:
                scope.tags[out] = tag


def _base_name(scope: _Scope, node: onnx.NodeProto, index: int) -> str:
    if node.name:
        return node.name
    return f"{scope.prefix}/{node.op_type}_{index}" if scope.prefix else f"{node.op_type}_{index}"


def _unique(base: str, names: dict[str, int]) -> str:
    n = names[base] = names.get(base, 0) + 1
    return base if n == 1 else f"{base}#{n}"
