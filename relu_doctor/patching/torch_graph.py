"""The leaky replacement of one site, written into a torch.fx graph.

Used for eager modules (a shallow fx trace of the module that makes the call) and for
torch.export programs (the graph of `ExportedProgram.module()`, exported again after).
Only stock torch ops go in (the functions the kinds registry names as each kind's
writer), so a patched model loads without relu-doctor installed:

    channel mode:  prelu(clamp(x, max=upper), slopes)   slopes along the neuron axis
    layer mode:    leaky_relu(clamp(x, max=upper), slope)

Clamping first keeps the upper bound of relu6 / clip sites (min(x, 6) then leak is the
same function as leaking then min) and leaves the leaky op last, so the site's output
is the output of a prelu / leaky_relu call, and a rescan sees a leaky site there.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import fx, nn

from ..kinds import torch_writer
from .plan import CHANNEL, SitePatch

# Node metadata that names sites (nn_module_stack) and points at the source: new nodes
# inherit it from the call they replace, so a rescan names them like the old call.
_KEPT_META = ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node")


def slope_tensor(patch: SitePatch, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(patch.slopes()).to(dtype=dtype, device=device)


def buffer_name(owner: nn.Module, node_name: str) -> str:
    """A free attribute name for the slopes of the site made by graph node `node_name`."""
    base = re.sub(r"\W+", "_", node_name).strip("_") + "_slopes"
    name, n = base, 1
    while hasattr(owner, name):
        n += 1
        name = f"{base}_{n}"
    return name


def insert_leak(graph: fx.Graph, x: fx.Node, patch: SitePatch, slopes: fx.Node | None,
                meta: dict[str, Any] | None = None) -> fx.Node:
    """Insert the leaky site reading `x` at the graph's insertion point; return its output node.

    `slopes` is a node giving the per-neuron slope tensor (channel mode only).
    """
    added: list[fx.Node] = []

    def call(fn: Any, *args: Any, **kwargs: Any) -> fx.Node:
        node = graph.call_function(fn, args, kwargs)
        added.append(node)
        return node

    h = x
    if patch.upper is not None:
        h = call(torch_writer("clip"), h, max=patch.upper)
    prelu = torch_writer("prelu")
    if patch.mode != CHANNEL:
        y = call(torch_writer("leaky_relu"), h, patch.slope)
    elif patch.axis == 1 or patch.rank <= 2:
        y = call(prelu, h, slopes)
    else:
        # prelu's slopes run along dim 1: bring the neuron axis there and back (views)
        y = call(torch.movedim, call(prelu, call(torch.movedim, h, patch.axis, 1), slopes), 1, patch.axis)
    for node in added:
        node.meta.update({k: v for k, v in (meta or {}).items() if k in _KEPT_META})
    return y


def replace_site(gm: fx.GraphModule, node: fx.Node, patch: SitePatch, dtype: torch.dtype,
                 inplace: bool = False) -> None:
    """Replace the call `node` of `gm` (its first input is the activation's input) by the leak.

    For an in-place call (relu_, ReLU(inplace=True)) later readers of its input saw the
    activated values; the rewrite is out of place, so they read the leak's output instead.
    """
    x = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))
    if not isinstance(x, fx.Node):
        raise ValueError(f"cannot find the input of graph node {node.name}")
    graph = gm.graph
    with graph.inserting_before(node):
        slopes = None
        if patch.mode == CHANNEL:
            device = next((t.device for t in gm.buffers()), torch.device("cpu"))
            name = buffer_name(gm, node.name)
            # Not persistent: the state dict keeps exactly the original keys, so checkpoints of
            # the original load into the patched model (and back); the slopes live in the code.
            gm.register_buffer(name, slope_tensor(patch, dtype, device), persistent=False)
            slopes = graph.get_attr(name)
        y = insert_leak(graph, x, patch, slopes, node.meta)
    node.replace_all_uses_with(y)
    if inplace:
        later = False
        for other in list(graph.nodes):
            if other is node:
                later = True
            elif later:
                other.replace_input_with(x, y)
    graph.erase_node(node)


def leak_module(patch: SitePatch, dtype: torch.dtype, device: torch.device | str = "cpu") -> fx.GraphModule:
    """A stand-alone module computing the leaky site: replaces an activation module called once."""
    root = nn.Module()
    graph = fx.Graph()
    x = graph.placeholder("input")
    slopes = None
    if patch.mode == CHANNEL:
        root.register_buffer("slopes", slope_tensor(patch, dtype, device), persistent=False)
        slopes = graph.get_attr("slopes")
    graph.output(insert_leak(graph, x, patch, slopes))
    gm = fx.GraphModule(root, graph)
    if slopes is not None:  # GraphModule copies buffers as persistent ones
        gm.register_buffer("slopes", gm.get_buffer("slopes"), persistent=False)
    return gm
