"""Later batches of a TorchScript or torch.export scan without the dispatch mode.

Why: a Python TorchDispatchMode sees every aten call of the forward pass, and costs for
that alone, before any of our code runs: on MobileNetV2 a do-nothing mode makes
TorchScript 3.5% slower and eager 1.8% (benchmarks/README.md, "What bounds the torch
rows"). A graph format says where its activations are, so only those places need Python.

How:
- A copy of the graph, made once per model: for TorchScript the forward's inlined graph,
  compiled into a function of its own (the module's weights are shared, never copied), for
  torch.export a copy of the program's graph module. Each node that may apply an activation
  gets a point, a number, in one of two ways (torch custom ops whose kernels are Python):
  - a relu, relu6 or clip with constant bounds is replaced by `clamp(x, top, point)` (or
    `clamp_`, in place), which computes and measures it in one pass (fused_clamp.py);
  - any other is followed by `observe(y, point)`, which measures its output.
- The first batch runs the copy under the mode. The mode runs the aten op each clamp op
  stands for, classifies, names and measures every activation as always, and learns which
  site each point measures (`Recording`): the activation measured since the previous point,
  when that is this point's tensor, or none (a clamp that is not an activation).
- Later batches run the copy with no mode; each point measures its site through the
  capture (`Replay`), with the neuron axis the mode found.
- Anything the points do not account for exactly keeps the mode for the whole scan: a
  site measured away from a point's tensor (a fused kernel measured from its arguments, a
  hand-written hard-swish settled later), a candidate node in control flow or in a function
  the copy does not reach, a bound computed at run time (which could classify differently
  in another batch).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from ..kinds import classify_aten, is_graph_candidate, split_op_name
from .torch_calls import CLAMP, CLAMP_IN_PLACE, CLAMPS, OBSERVE, clamp_top
from .torch_naming import has_candidate, is_export_candidate

_NAMESPACE, _NAME = OBSERVE
_state = threading.local()  # .replay: the Replay running on this thread, if any


_registering = threading.Lock()  # two scans starting at once register the library once


def _ops() -> tuple[Any, Any, Any]:
    """The observe op and the clamp ops (out of place, in place)."""
    with _registering:
        return _registered_ops()[1:]


@cache
def _registered_ops() -> tuple[Any, Any, Any, Any]:
    """The library (the ops live as long as it does) and its three ops, registered on first
    use (an eager scan never needs them). Through torch.library.Library, not custom_op: the
    first call of a custom_op imports dynamo (1.1 s, measured), and each call pays its wrapper."""
    library = torch.library.Library(_NAMESPACE, "DEF")
    # observe declares that it mutates y: TorchScript drops a call with no outputs and no effects
    library.define(f"{_NAME}(Tensor(a!) y, int point) -> ()")
    library.define(f"{CLAMP[1]}(Tensor x, float top, int point) -> Tensor")
    library.define(f"{CLAMP_IN_PLACE[1]}(Tensor(a!) x, float top, int point) -> ()")

    def observe(y: torch.Tensor, point: int) -> None:
        replay = getattr(_state, "replay", None)
        if replay is not None:
            replay.observed(y, point)

    def clamp(x: torch.Tensor, top: float, point: int) -> torch.Tensor:
        replay = getattr(_state, "replay", None)
        return replay.clamp(x, top, point) if replay is not None else _clamp(x, top)

    def clamp_(x: torch.Tensor, top: float, point: int) -> None:
        replay = getattr(_state, "replay", None)
        if replay is not None:
            replay.clamp(x, top, point, in_place=True)
        else:
            _clamp(x, top, in_place=True)

    for name, kernel in ((_NAME, observe), (CLAMP[1], clamp), (CLAMP_IN_PLACE[1], clamp_)):
        library.impl(name, kernel, "CompositeExplicitAutograd")
    namespace = getattr(torch.ops, _NAMESPACE)
    return (library, getattr(namespace, _NAME).default, getattr(namespace, CLAMP[1]).default,
            getattr(namespace, CLAMP_IN_PLACE[1]).default)


def _clamp(x: torch.Tensor, top: float, in_place: bool = False) -> torch.Tensor:
    """torch's clamp(x, 0, top): bit for bit the relu / relu6 / hardtanh / clamp it replaces
    (tests/test_fused_clamp.py)."""
    bound = None if top == float("inf") else top
    return x.clamp_(0, bound) if in_place else x.clamp(0, bound)


# ---- the instrumented copies -----------------------------------------------------------


# point -> (the aten op a clamp op stands for, its arguments after x, its keyword arguments)
Originals = dict[int, tuple[Any, tuple[Any, ...], dict[str, Any]]]


@dataclass
class Instrumented:
    """A forward with observe and clamp ops (see the module's docstring), and for each
    clamp op's point the call it stands for: the aten op and its arguments after x."""

    forward: Callable[..., Any]
    originals: Originals


# Per module, the instrumented forward, made once: a fresh TorchScript function's first runs
# profile and optimize it (about 10% of a MobileNetV2 batch), which repeated scans of one
# model (a notebook, a benchmark) would pay every time. Weak keys: nothing kept alive.
_made: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _once(key: Any, make: Callable[[Any], Any]) -> Any:
    if key not in _made:
        _made[key] = make(key)
    return _made[key]


def script_forward(module: torch.jit.ScriptModule) -> Instrumented | None:
    """`module`'s forward, instrumented; None when the inlined graph cannot be instrumented
    exactly (see the module's docstring)."""
    return _once(module, _script_forward)


def _script_forward(module: torch.jit.ScriptModule) -> Instrumented | None:
    graph = module.inlined_graph  # a copy, every call of a submodule inlined in call order
    torch._C._jit_pass_constant_propagation(graph)  # as torchscript_origins: the branches that run
    if any(node.kind() == "prim::SetAttr" for node in graph.nodes()):
        return None  # the forward changes the module's attributes, which bounds may read
    _ops()
    originals: Originals = {}
    point = 0
    for node in list(graph.nodes()):
        candidate = _script_candidate(node)
        if candidate is None:
            return None
        if candidate:
            clamp = _script_clamp(node)
            if clamp is None:
                _insert_after(graph, node, f"{_NAMESPACE}::{_NAME}", [node.output()], point)
            else:
                originals[point] = _replace_by_clamp(graph, node, point, *clamp)
            point += 1
    arguments = module.forward.schema.arguments[1:]  # type: ignore[attr-defined]  # after self
    defaults = [a.default_value for a in arguments if a.has_default_value()]
    required = len(arguments) - len(defaults)  # a compiled function has no defaults: pass the rest
    function = torch._C._create_function_from_graph("relu_doctor_observed_forward", graph)
    state = module._c
    return Instrumented(lambda *inputs: function(state, *inputs, *defaults[len(inputs) - required:]), originals)


def _script_candidate(node: Any) -> bool | None:
    """Whether to instrument the node; None where it is a candidate that cannot be (then
    the whole graph cannot)."""
    if any(has_candidate(block) for block in node.blocks()):
        return None  # control flow decides how often its activations run
    if not is_graph_candidate(*split_op_name(node.kind())):
        return False
    outputs = list(node.outputs())
    if len(outputs) != 1 or not outputs[0].type().isSubtypeOf(torch._C.TensorType.get()):
        return None
    if any(not _fixed_script_input(value) for value in list(node.inputs())[1:]):
        return None
    return True


def _script_clamp(node: Any) -> tuple[float, bool, Any, tuple[Any, ...]] | None:
    """(top, in place, aten op, its arguments after x) for a node that computes an activation
    clamp(x, 0, top) from constants; None for any other."""
    namespace, name = split_op_name(node.kind())
    inputs = list(node.inputs())
    if namespace != "aten" or name not in CLAMPS or any(v.node().kind() != "prim::Constant" for v in inputs[1:]):
        return None
    overload = torch._C.parse_schema(node.schema()).overload_name
    if overload:
        return None  # an out= variant (writes a buffer of the caller's), or tensor bounds
    constants = tuple(v.toIValue() for v in inputs[1:])
    top = clamp_top(classify_aten(name, (None, *constants), {}))
    if top is None:
        return None
    return top, name.endswith("_"), getattr(torch.ops.aten, name).default, constants


def _insert_after(graph: Any, node: Any, kind: str, inputs: list[Any], point: int, outputs: int = 0) -> Any:
    """A new node `kind(*inputs, point)` right after `node`, its constants just before it."""
    constant = graph.insertConstant(point)
    call = graph.create(kind, [*inputs, constant], outputs)
    call.insertAfter(node)
    constant.node().moveBefore(call)
    return call


def _replace_by_clamp(graph: Any, node: Any, point: int, top: float, in_place: bool, op: Any,
                      constants: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Put clamp(x, top, point) (or clamp_) in the place of `node`; return what it stands for."""
    x = node.inputsAt(0)
    bound = graph.insertConstant(top)
    bound.node().moveBefore(node)
    name = CLAMP_IN_PLACE if in_place else CLAMP
    call = _insert_after(graph, node, f"{_NAMESPACE}::{name[1]}", [x, bound], point, 0 if in_place else 1)
    if in_place:
        node.output().replaceAllUsesWith(x)  # an in-place op returns its input
    else:
        call.output().setType(node.output().type())
        node.output().replaceAllUsesWith(call.output())
    node.destroy()
    return op, constants, {}


def _fixed_script_input(value: Any) -> bool:
    """A classification input that is the same every batch: a constant, a module attribute
    (the forward sets none), or a tensor (the classifiers read only scalar bounds; a tensor
    bound is never an activation's)."""
    return value.node().kind() in ("prim::Constant", "prim::GetAttr") or \
        value.type().isSubtypeOf(torch._C.TensorType.get())


def instrumented_graph_module(graph_module: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, Originals] | None:
    """A copy of an export graph module, instrumented (the weights are the original's), and
    its `Instrumented.originals`; None when that would not be exact."""
    return _once(graph_module, _instrumented_graph_module)


def _instrumented_graph_module(graph_module: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, Originals] | None:
    subgraphs = (m for m in graph_module.modules() if m is not graph_module and isinstance(m, torch.fx.GraphModule))
    if any(is_export_candidate(node) for sub in subgraphs for node in sub.graph.nodes):
        return None  # in a higher-order op's subgraph (cond, map): control flow
    graph = copy.deepcopy(graph_module.graph)  # node meta is copied shallowly: cheap
    observe, clamp, clamp_in_place = _ops()
    originals: Originals = {}
    point = 0
    for node in list(graph.nodes):
        if not is_export_candidate(node):
            continue
        if not isinstance(node.meta.get("val"), torch.Tensor):
            return None
        values = [*node.args[1:], *node.kwargs.values()]
        if any(isinstance(v, torch.fx.Node) and not isinstance(v.meta.get("val"), torch.Tensor) for v in values):
            return None  # a bound computed at run time
        name = node.target._overloadpacket.__name__  # type: ignore[union-attr]
        constant = name in CLAMPS and node.target._overloadname == "default" and \
            not any(isinstance(v, torch.fx.Node) for v in values)  # type: ignore[union-attr]
        top = clamp_top(classify_aten(name, node.args, dict(node.kwargs))) if constant else None
        if top is None:
            with graph.inserting_after(node):
                graph.call_function(observe, (node, point))
        else:
            originals[point] = (node.target, tuple(node.args[1:]), dict(node.kwargs))
            x, in_place = node.args[0], name.endswith("_")
            if in_place:
                node.replace_all_uses_with(x)  # type: ignore[arg-type]  # an in-place op returns its input
            node.target, node.args, node.kwargs = clamp_in_place if in_place else clamp, (x, top, point), {}
        point += 1
    return torch.fx.GraphModule(graph_module, graph), originals


# ---- the first batch: which point measures which site --------------------------------------


@dataclass(frozen=True)
class PointSite:
    """What an observe point measures: a site of the capture and the tensor's neuron axis
    as the mode found it (before the capture's sample-first view)."""

    name: str
    axis: int


class Recording:
    """Fed by the capture mode during the first batch: each measured activation
    (`measured`) and each point reached (`observed`), in run order. `originals`: what each
    clamp op stands for (Instrumented), which the mode runs in its place."""

    def __init__(self, originals: Originals) -> None:
        self.originals = originals
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
    """Runs the instrumented forward with no mode. `measure(site, y, axis, measured=None)`
    and `compute_clamp(x, top, in_place, axis)` are the capture mode's."""

    def __init__(self, instrumented: Instrumented, points: dict[int, PointSite | None],
                 measure: Callable[..., None], compute_clamp: Callable[..., Any]) -> None:
        self.forward = instrumented.forward
        self._originals = instrumented.originals
        self._points = points
        self._measure = measure
        self._compute_clamp = compute_clamp
        self._reached: set[int] = set()
        self._error: Exception | None = None

    def __call__(self, *inputs: Any) -> Any:
        self._reached, self._error = set(), None
        _state.replay = self
        try:
            outputs = self.forward(*inputs)
        except Exception:
            if self._error is not None:  # ours, which TorchScript wrapped in its RuntimeError
                raise self._error from None
            raise
        finally:
            _state.replay = None
        if self._reached != self._points.keys():  # cannot happen without control flow; the scan stops
            raise RuntimeError(f"the instrumented forward reached {len(self._reached)} of its "
                               f"{len(self._points)} points")
        return outputs

    def observed(self, y: torch.Tensor, point: int) -> None:
        try:
            site = self._reach(point)
            if site is not None:
                self._measure(site.name, y, site.axis)
        except Exception as e:
            self._error = e
            raise

    def clamp(self, x: torch.Tensor, top: float, point: int, in_place: bool = False) -> torch.Tensor:
        """What the clamp op stands for, measured at its site: computed and reduced in one pass
        where the capture can (fused_clamp.py), else the original op's output, read."""
        try:
            site = self._reach(point)
            computed = self._compute_clamp(x, top, in_place, site.axis) if site is not None else None
            if computed is not None:
                y, rows = computed
                self._measure(site.name, y, site.axis, measured=rows)  # type: ignore[union-attr]
                return y
            op, args, kwargs = self._originals[point]  # exact for any dtype (an integer clamp stays integer)
            y = op(x, *args, **kwargs)
            if site is not None:
                self._measure(site.name, y, site.axis)
            return y
        except Exception as e:
            self._error = e
            raise

    def _reach(self, point: int) -> PointSite | None:
        if point in self._reached:
            raise RuntimeError(f"point {point} reached twice in one forward pass")
        self._reached.add(point)
        return self._points[point]
