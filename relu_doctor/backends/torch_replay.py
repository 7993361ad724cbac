"""Later batches of a TorchScript or torch.export scan without the dispatch mode.

Why: a Python TorchDispatchMode sees every aten call of the forward pass, and costs for
that alone, before any of our code runs: on MobileNetV2 a do-nothing mode makes
TorchScript 3.5% slower and eager 1.8% (benchmarks/README.md, "What bounds the torch
rows"). A graph format says where its activations are, so only those places need Python.

How:
- A copy of the graph gets an `observe(y, point)` op (a torch custom op whose kernel is
  Python) right after each node that may apply an activation: for TorchScript the
  forward's inlined graph, compiled into a function of its own (the module's weights are
  shared, never copied), for torch.export a copy of the program's graph module.
- The first batch runs that copy under the mode as always. The mode classifies, names
  and measures every activation, and at each observe op learns which site the point
  measures (`Recording`): the activation measured since the previous point, when that is
  this point's tensor, or none (a clamp that is not an activation).
- Later batches run the copy with no mode; each observe op measures its site through the
  capture (`Replay`), with the neuron axis the mode found.
- Anything the points do not account for exactly keeps the mode for the whole scan: a
  site measured away from an observed tensor (a fused kernel measured from its
  arguments, a hand-written hard-swish settled later), a candidate node in control flow
  or in a function the copy does not reach, a bound computed at run time (which could
  classify differently in another batch).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from ..kinds import is_graph_candidate, split_op_name
from .torch_calls import OBSERVE
from .torch_naming import has_candidate, is_export_candidate

_NAMESPACE, _NAME = OBSERVE
_state = threading.local()  # .replay: the Replay running on this thread, if any


@cache
def _observe_op() -> Any:
    """The observe op, registered on first use (an eager scan never needs it)."""

    # It declares that it mutates y: TorchScript drops a call with no outputs and no effects.
    @torch.library.custom_op(f"{_NAMESPACE}::{_NAME}", mutates_args=("y",))
    def observe(y: torch.Tensor, point: int) -> None:
        replay = getattr(_state, "replay", None)
        if replay is not None:
            replay.observed(y, point)

    return getattr(getattr(torch.ops, _NAMESPACE), _NAME).default


# ---- the instrumented copies -----------------------------------------------------------


def script_forward(module: torch.jit.ScriptModule) -> Callable[..., Any] | None:
    """`module`'s forward with an observe op after each candidate node; None when the
    inlined graph cannot be instrumented exactly (see the module's docstring)."""
    graph = module.inlined_graph  # a copy, every call of a submodule inlined in call order
    torch._C._jit_pass_constant_propagation(graph)  # as torchscript_origins: the branches that run
    if any(node.kind() == "prim::SetAttr" for node in graph.nodes()):
        return None  # the forward changes the module's attributes, which bounds may read
    _observe_op()
    point = 0
    for node in list(graph.nodes()):
        if any(has_candidate(block) for block in node.blocks()):
            return None  # control flow decides how often its activations run
        if not is_graph_candidate(*split_op_name(node.kind())):
            continue
        outputs = list(node.outputs())
        if len(outputs) != 1 or not outputs[0].type().isSubtypeOf(torch._C.TensorType.get()):
            return None
        if any(not _fixed_script_input(value) for value in list(node.inputs())[1:]):
            return None
        index = graph.insertConstant(point)  # type: ignore[attr-defined]
        call = graph.create(f"{_NAMESPACE}::{_NAME}", [outputs[0], index], 0)
        call.insertAfter(node)
        index.node().moveBefore(call)
        point += 1
    arguments = module.forward.schema.arguments[1:]  # type: ignore[attr-defined]  # after self
    defaults = [a.default_value for a in arguments if a.has_default_value()]
    required = len(arguments) - len(defaults)  # a compiled function has no defaults: pass the rest
    function = torch._C._create_function_from_graph("relu_doctor_observed_forward", graph)
    state = module._c
    return lambda *inputs: function(state, *inputs, *defaults[len(inputs) - required:])


def _fixed_script_input(value: Any) -> bool:
    """A classification input that is the same every batch: a constant, a module attribute
    (the forward sets none), or a tensor (the classifiers read only scalar bounds; a tensor
    bound is never an activation's)."""
    return value.node().kind() in ("prim::Constant", "prim::GetAttr") or \
        value.type().isSubtypeOf(torch._C.TensorType.get())


def instrumented_graph_module(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule | None:
    """A copy of an export graph module with an observe op after each candidate node
    (the weights are the original's); None when that would not be exact."""
    subgraphs = (m for m in graph_module.modules() if m is not graph_module and isinstance(m, torch.fx.GraphModule))
    if any(is_export_candidate(node) for sub in subgraphs for node in sub.graph.nodes):
        return None  # in a higher-order op's subgraph (cond, map): control flow
    graph = copy.deepcopy(graph_module.graph)  # node meta is copied shallowly: cheap
    point = 0
    for node in list(graph.nodes):
        if not is_export_candidate(node):
            continue
        if not isinstance(node.meta.get("val"), torch.Tensor):
            return None
        values = [*node.args[1:], *node.kwargs.values()]
        if any(isinstance(v, torch.fx.Node) and not isinstance(v.meta.get("val"), torch.Tensor) for v in values):
            return None  # a bound computed at run time
        with graph.inserting_after(node):
            graph.call_function(_observe_op(), (node, point))
        point += 1
    return torch.fx.GraphModule(graph_module, graph)


# ---- the first batch: which point measures which site --------------------------------------


@dataclass(frozen=True)
class PointSite:
    """What an observe point measures: a site of the capture and the tensor's neuron axis
    as the mode found it (before the capture's sample-first view)."""

    name: str
    axis: int


class Recording:
    """Fed by the capture mode during the first batch: each measured activation
    (`measured`) and each observe point reached (`observed`), in run order."""

    def __init__(self) -> None:
        self.points: dict[int, PointSite | None] = {}
        self.exact = True
        self._since_last_point: list[tuple[torch.Tensor, PointSite]] = []

    def measured(self, y: torch.Tensor, site: PointSite) -> None:
        self._since_last_point.append((y, site))

    def observed(self, y: torch.Tensor, point: int) -> None:
        pending, self._since_last_point = self._since_last_point, []
        if point in self.points or len(pending) > 1 or (pending and pending[0][0] is not y):
            self.exact = False
        self.points[point] = pending[0][1] if pending else None

    def finish(self) -> bool:
        """After the pass: whether every measurement happened at a point, each point once."""
        return self.exact and not self._since_last_point


# ---- later batches -----------------------------------------------------------------------------


class Replay:
    """Runs the instrumented forward with no mode; `measure(site, y, axis)` is the capture's."""

    def __init__(self, forward: Callable[..., Any], points: dict[int, PointSite | None],
                 measure: Callable[[str, torch.Tensor, int], None]) -> None:
        self.forward = forward
        self._points = points
        self._measure = measure
        self._reached: set[int] = set()

    def __call__(self, *inputs: Any) -> Any:
        self._reached = set()
        _state.replay = self
        try:
            outputs = self.forward(*inputs)
        finally:
            _state.replay = None
        if self._reached != self._points.keys():  # cannot happen without control flow: never count half a batch
            raise RuntimeError(f"the instrumented forward reached {len(self._reached)} of its "
                               f"{len(self._points)} observe points")
        return outputs

    def observed(self, y: torch.Tensor, point: int) -> None:
        if point in self._reached:
            raise RuntimeError(f"observe point {point} reached twice in one forward pass")
        self._reached.add(point)
        site = self._points[point]
        if site is not None:
            self._measure(site.name, y, site.axis)
