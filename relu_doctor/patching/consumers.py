"""Which layer makes a site's input and which layers read its output, in an eager module.

ReDo-style revival (training/revive.py; `patch --mode revive`) re-initialises a neuron's
incoming weights and zeroes its outgoing ones; that keeps the function only when the
neuron's output reaches nothing but linear maps that can zero it (Linear, Conv with
groups=1), through ops that keep channels apart (dropout, pooling, flatten), and when its
input comes from one Linear/Conv (optionally through a BatchNorm) that feeds nothing else.
Anything else (a residual add, a concat, a model output) is refused with the reason.

The model is traced with torch.fx (torch.nn layers stay call_module nodes); a site is
matched to its node by the scan's naming rule (backends/torch_naming.site_name).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..backends.torch_naming import CallOrigin, site_name
from ..kinds import ACTIVATION_MODULES, TENSOR_METHODS, torch_functions

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                 nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_PASS_FUNCTIONS = {F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.dropout}
_PASS_METHODS = {"contiguous"}
_REVIVED = ("relu", "relu6")  # the kinds whose sites are revived here
_RELU_FUNCTIONS = {fn: kind for fn, kind in torch_functions().items() if kind in _REVIVED}
_RELU_METHODS = {m: kind for m, kind in TENSOR_METHODS.items() if kind in _REVIVED}
_DESCRIBE = {operator.add: "an add (a residual connection?)", torch.add: "an add (a residual connection?)",
             operator.iadd: "an in-place add (a residual connection?)", torch.cat: "a concatenation",
             operator.mul: "a multiplication", torch.mul: "a multiplication"}


@dataclass
class Consumer:
    path: str  # module path of the Linear / Conv reading the neuron
    flattened: bool  # channels were flattened into features on the way (Linear columns in blocks)


@dataclass
class Neighbours:
    """The layers around one site, or why it cannot be revived without changing the function."""

    site: str
    producer: str | None = None  # the Linear / Conv making the site's input
    norm: str | None = None  # a BatchNorm between producer and site
    consumers: list[Consumer] = field(default_factory=list)
    refusal: str | None = None


def find_neighbours(model: nn.Module, site_names: list[str]) -> dict[str, Neighbours]:
    """Neighbours of each named site (refused ones carry the reason)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        reason = f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        return {n: Neighbours(n, refusal=reason) for n in site_names}
    modules = dict(gm.named_modules())
    nodes = _site_nodes(gm, modules)
    out = {}
    for name in site_names:
        node = nodes.get(name)
        if node is None:
            out[name] = Neighbours(name, refusal="its call is not in the traced graph (control flow?)")
            continue
        out[name] = _neighbours(name, node, modules)
    return out


def _site_nodes(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> dict[str, fx.Node]:
    """Site name -> the graph node that makes that call, by the scan's naming rule."""
    counts: dict[str, int] = {}
    found = {}
    for node in gm.graph.nodes:
        origin_kind = _activation(node, modules)
        if origin_kind is None:
            continue
        origin, kind = origin_kind
        found[site_name(origin, kind, counts)] = node
    return found


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[CallOrigin, str] | None:
    if node.op == "call_module":
        m = modules.get(str(node.target))
        name = type(m).__name__
        if name in ("ReLU", "ReLU6") and name in ACTIVATION_MODULES:
            return CallOrigin(str(node.target), name), "relu6" if name == "ReLU6" else "relu"
        return None
    kind = None
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        kind = _RELU_FUNCTIONS[node.target]  # type: ignore[index]
    elif node.op == "call_method" and node.target in _RELU_METHODS:
        kind = _RELU_METHODS[str(node.target)]
    if kind is None:
        return None
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    owner = type(modules.get(path)).__name__ if path in modules else None
    return CallOrigin(path, owner), kind


def _neighbours(name: str, node: fx.Node, modules: dict[str, nn.Module]) -> Neighbours:
    result = Neighbours(name)
    source = node.args[0] if node.args else None
    if isinstance(source, fx.Node) and source.op == "call_module" and isinstance(modules[str(source.target)], _NORM):
        if len(source.users) != 1:
            result.refusal = f"its BatchNorm {source.target} also feeds other layers"
            return result
        result.norm = str(source.target)
        source = source.args[0] if source.args else None
    if not (isinstance(source, fx.Node) and source.op == "call_module"
            and _is_linear_map(modules.get(str(source.target)))):
        result.refusal = f"its input is not made by a Linear or Conv layer ({_what(source, modules)})"
        return result
    if len(source.users) != 1:
        result.refusal = f"its producer {source.target} also feeds other layers"
        return result
    result.producer = str(source.target)
    problem = _walk_consumers(node, modules, result, flattened=False)
    if problem:
        result.refusal = problem
        result.consumers.clear()
    elif not result.consumers:
        result.refusal = "its output reaches no Linear or Conv layer"
    return result


def _walk_consumers(node: fx.Node, modules: dict[str, nn.Module], result: Neighbours, flattened: bool) -> str | None:
    for user in node.users:
        target = modules.get(str(user.target)) if user.op == "call_module" else None
        if user.op == "output":
            return "it is an output of the model"
        if _is_linear_map(target) and user.args and user.args[0] is node:
            if isinstance(target, _CONV) and flattened:
                return f"its flattened output reaches the convolution {user.target}"
            result.consumers.append(Consumer(str(user.target), flattened))
            continue
        if isinstance(target, nn.Flatten) or _is_flatten_call(user):
            if flattened:
                return "its output is flattened twice"
            problem = _walk_consumers(user, modules, result, flattened=True)
        elif isinstance(target, _PASS_MODULES) or (user.op == "call_function" and user.target in _PASS_FUNCTIONS) \
                or (user.op == "call_method" and user.target in _PASS_METHODS):
            problem = _walk_consumers(user, modules, result, flattened)
        else:
            problem = f"its output feeds {_what(user, modules)}, not only linear layers"
        if problem:
            return problem
    return None


def _is_linear_map(m: Any) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, _CONV) and m.groups == 1)


def _is_flatten_call(node: fx.Node) -> bool:
    """torch.flatten(x, 1) or x.flatten(1): samples kept, (C, *spatial) -> features."""
    if (node.op == "call_function" and node.target is torch.flatten) or \
            (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return bool(start == 1 and end == -1)
    return False


def _what(node: Any, modules: dict[str, nn.Module]) -> str:
    if not isinstance(node, fx.Node):
        return "not a layer"
    if node.op == "call_module":
        return f"{type(modules.get(str(node.target))).__name__} {node.target}"
    if node.op == "call_function" and node.target in _DESCRIBE:
        return _DESCRIBE[node.target]  # type: ignore[index]
    if node.op == "placeholder":
        return "the model's input"
    return f"{getattr(node.target, '__name__', node.target)}"
