"""The torch.fx graphs that producers.py and consumers.py walk, and which node is which site.

Two kinds of graph:
- torch.export graphs (patch, prune; a .pt2 brings its own): weights are get_attr nodes
  named by their state-dict key, ops are aten calls, every node knows its shape.
- torch.fx.symbolic_trace graphs (revive() in training: the live model, no example
  input at hand): torch.nn layers stay call_module nodes and nodes carry no shapes.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import UserError, summarize_exception

_REVIVED = ("relu", "relu6")  # the kinds whose sites revive() takes from a trace


def export_graph(obj: Any, example: Sequence[torch.Tensor] | None, what: str, hint: str) -> fx.GraphModule:
    """A torch.export graph module of an nn.Module or ExportedProgram (its own for a .pt2),
    weights named by state-dict key. `what` ("prune", "--mode revive") and `hint` go into the errors."""
    if isinstance(obj, torch.export.ExportedProgram):
        return obj.module()
    if isinstance(obj, torch.jit.ScriptModule):
        from ..patching.torch import torchscript_refusal

        raise torchscript_refusal()
    if example is None:
        raise UserError(f"{what} needs example inputs to trace the model", "Pass --data or --input-shape.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(copy.deepcopy(obj).eval(), tuple(example), strict=False).module()
    except Exception as e:
        raise UserError(f"{what} finds the layers around each site with torch.export, which fails on this "
                        f"model: {summarize_exception(e)}", hint) from None


def trace(model: nn.Module) -> fx.GraphModule | str:
    """A symbolic_trace graph of a live model (no example input needed), or why there is none."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        return f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})"


def traced_sites(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """Site name -> node of each ReLU / ReLU6 call in a symbolic_trace graph, by the scan's naming rule.
    Calls of other kinds and those inside leaf modules are not listed: compare with `same_count`."""
    from ..backends.torch_naming import CallOrigin, site_name
    from ..kinds import ACTIVATION_MODULES, TENSOR_METHODS, torch_functions

    functions = {fn: kind for fn, kind in torch_functions().items() if kind in _REVIVED}
    methods = {m: kind for m, kind in TENSOR_METHODS.items() if kind in _REVIVED}
    modules = dict(gm.named_modules())
    counts: dict[str, int] = {}
    found = {}
    for node in gm.graph.nodes:
        kind = None
        if node.op == "call_module":
            name = type(modules.get(str(node.target))).__name__
            if name in ("ReLU", "ReLU6") and name in ACTIVATION_MODULES:
                found[site_name(CallOrigin(str(node.target), name), name.lower(), counts)] = node
            continue
        if node.op == "call_function" and node.target in functions:
            kind = functions[node.target]
        elif node.op == "call_method" and node.target in methods:
            kind = methods[str(node.target)]
        if kind is None:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        owner = type(modules.get(path)).__name__ if path in modules else None
        found[site_name(CallOrigin(path, owner), kind, counts)] = node
    return found


def same_count(name: str, traced: Sequence[str], reported: Sequence[str]) -> bool:
    """Whether the trace and the report name as many calls like `name` ("x/relu", "x/relu#2"...):
    a call the trace does not see (another spelling of the kind) would shift the "#n" numbers,
    and a site would be matched to the wrong node."""
    base = name.split("#")[0]
    return sum(n.split("#")[0] == base for n in traced) == sum(n.split("#")[0] == base for n in reported)
