"""What a torch.fx node says about itself, for the walks around an activation (producers.py,
consumers.py): its op's name, its shape, a convolution's groups, and how many nodes read
each parameter. Nodes of a symbolic_trace graph carry no shapes: `node_shape` is then None.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def node_rank(node: fx.Node) -> int | None:
    shape = node_shape(node)
    return len(shape) if shape is not None else None


def node_shape(node: fx.Node) -> list[int] | None:
    val = node.meta.get("val", node.meta.get("tensor_meta"))
    shape = getattr(val, "shape", None)
    return [int(d) if isinstance(d, int) else -1 for d in shape] if shape is not None else None


def conv_groups(op: str, node: fx.Node) -> int:
    index = 8 if op in ("convolution", "_convolution") else 6
    value: Any = node.args[index] if len(node.args) > index else node.kwargs.get("groups", 1)
    return int(value)


def op_name(node: fx.Node) -> str | None:
    if node.op == "call_function":
        target = node.target
        if hasattr(target, "_overloadpacket"):
            return str(target._overloadpacket.__name__)  # type: ignore[union-attr]
        name = getattr(target, "__name__", None)
        return str(name) if name else None
    if node.op == "call_method":
        return str(node.target)
    return None


def param_uses(gm: fx.GraphModule) -> dict[str, int]:
    """How many graph nodes read each parameter (a weight shared by two layers cannot be cut for one)."""
    uses: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            uses[str(n.target)] = uses.get(str(n.target), 0) + len(n.users)
        elif n.op == "call_module":
            for name, _ in gm.get_submodule(str(n.target)).named_parameters():
                key = f"{n.target}.{name}"
                uses[key] = uses.get(key, 0) + 1
    return uses
