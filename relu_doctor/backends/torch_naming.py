"""Where each activation call comes from: the module path that names a site.

Capture runs at the aten level (a TorchDispatchMode), which sees eager modules,
TorchScript and torch.export programs alike but knows nothing of modules. Names come
from the side: live forward hooks for eager modules, and for graph formats the graph
itself, whose candidate nodes run in order, one runtime call each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..kinds import ACTIVATION_MODULES, is_graph_candidate, split_op_name


@dataclass(frozen=True)
class CallOrigin:
    path: str  # the innermost enclosing module's path ("" for the top module)
    module_type: str | None  # its class name, e.g. "ReLU"

    @property
    def is_activation_module(self) -> bool:
        return self.module_type in ACTIVATION_MODULES


UNKNOWN = CallOrigin("", None)


def site_name(origin: CallOrigin | None, kind: str, counts: dict[str, int]) -> str:
    """The site naming rule (SPEC 3), shared by the capture and by patching.

    The module path for a call of an activation module, "<enclosing path>/<kind>" for any
    other call; the 2nd, 3rd ... call of a name in one forward pass gets "#2", "#3".
    `counts` holds the names given so far in this forward pass, and is updated.
    """
    origin = origin or UNKNOWN
    # A model that is itself one activation module has no path: name it as a top-level call,
    # as TorchScript and torch.export (which list no module for it) do.
    base = origin.path if origin.is_activation_module and origin.path else f"{origin.path}/{kind}"
    n = counts[base] = counts.get(base, 0) + 1
    return base if n == 1 else f"{base}#{n}"


class EagerModuleTracker:
    """Tracks the stack of running modules with forward hooks (removed by `close`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._stack: list[CallOrigin] = []
        self._handles: list[Any] = []
        for path, module in model.named_modules():
            origin = CallOrigin(path, type(module).__name__)
            self._handles.append(module.register_forward_pre_hook(self._enter(origin)))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, origin: CallOrigin) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any) -> None:
            self._stack.append(origin)

        return hook

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._stack:
            self._stack.pop()

    def origin(self, candidate_index: int, op: str = "", nth: int = 0) -> CallOrigin:
        return self._stack[-1] if self._stack else UNKNOWN

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class GraphOrigins:
    """Origins of a graph's candidate nodes, in the order they run.

    Where control flow decides which candidate nodes run, `by_op` maps each op ("aten.relu")
    to the origins of its nodes in graph order, used when that is unambiguous (no node of
    the op is conditional, or all its nodes share one origin): the nth call of the op
    then comes from its nth node."""

    def __init__(self, origins: list[CallOrigin] | None, warning: str | None = None,
                 by_op: dict[str, list[CallOrigin]] | None = None) -> None:
        self._origins = origins
        self._by_op = by_op
        self.warning = warning

    def origin(self, candidate_index: int, op: str = "", nth: int = 0) -> CallOrigin | None:
        """None when the graph cannot tell (control flow, or more calls than nodes)."""
        if self._by_op is not None:
            nodes = self._by_op.get(op, [])
            return nodes[nth] if nth < len(nodes) else None
        if self._origins is None or candidate_index >= len(self._origins):
            return None
        return self._origins[candidate_index]

    def check_count(self, calls: int) -> str | None:
        if self._origins is not None and calls != len(self._origins):
            self._origins = None
            return (f"the graph lists a different number of activation calls than ran ({calls}); "
                    "site names fall back to generic ones")
        return None

    def close(self) -> None:
        pass


_HIERARCHY_PART = re.compile(r"([^.()]+)\(([^()]*)\)")


def torchscript_origins(module: torch.jit.ScriptModule) -> GraphOrigins:
    """From the inlined graph: each node's module hierarchy, 'a(Seq).0(Block).relu(ReLU)'."""
    graph = module.inlined_graph  # a copy: the passes below do not touch the module
    # Scripted F.relu(x, inplace=False) compiles to If(False): relu_ / relu. Constant
    # propagation keeps the branch that runs, so the graph lists what executes.
    torch._C._jit_pass_constant_propagation(graph)
    found: list[tuple[str, CallOrigin, bool]] = []  # (op, origin, conditional) in graph order
    if not _candidates(graph, module, False, found):
        return GraphOrigins(None, _GENERIC)
    if not any(conditional for _, _, conditional in found):
        return GraphOrigins([origin for _, origin, _ in found])
    by_op: dict[str, list[CallOrigin]] = {}
    for op, origin, _ in found:
        by_op.setdefault(op, []).append(origin)
    for op, origins in by_op.items():
        conditional = any(c for o, _, c in found if o == op)
        if conditional and len(set(origins)) > 1:
            return GraphOrigins(None, _GENERIC)
    return GraphOrigins(None, by_op=by_op)


_GENERIC = "TorchScript control flow holds activations: site names are generic"


# Nodes that never hold blocks (control flow is prim::If, prim::Loop, prim::With ...):
# asking each of a graph's nodes for its blocks costs 20 us a node, 17 ms for MobileNetV2
# (815 nodes: 472 GetAttr, 209 ListConstruct), 0.8% of its scan.
_BLOCKLESS = frozenset({"prim::GetAttr", "prim::Constant", "prim::ListConstruct", "prim::TupleConstruct",
                        "prim::ListUnpack", "prim::TupleUnpack", "prim::NumToTensor"})


def _candidates(block: Any, root: torch.jit.ScriptModule, conditional: bool,
                found: list[tuple[str, CallOrigin, bool]]) -> bool:
    """Collect the block's candidate nodes (recursively); False when a loop holds one."""
    for node in block.nodes():
        kind = node.kind()
        if _is_candidate_kind(kind):
            namespace, name = split_op_name(kind)
            found.append((f"{namespace}.{name}", _origin_from_hierarchy(node.getModuleHierarchy(), root),
                          conditional))
        if kind.startswith("aten::") or kind in _BLOCKLESS:
            continue
        for inner in node.blocks():
            if kind != "prim::If" and has_candidate(inner):
                return False  # a loop: its calls repeat a number of times known at run time
            if not _candidates(inner, root, True, found):
                return False
    return True


def has_candidate(block: Any) -> bool:
    return any(_is_candidate_kind(n.kind()) or any(has_candidate(b) for b in n.blocks()) for n in block.nodes())


def _is_candidate_kind(kind: str) -> bool:
    return is_graph_candidate(*split_op_name(kind))


def _origin_from_hierarchy(hierarchy: str, root: torch.jit.ScriptModule) -> CallOrigin:
    """'b(Sequential).1(ReLU).UNKNOWN_INSTANCE(...)' -> the module path as eager names it.

    The hierarchy lists the modules that were called; ModuleList / ModuleDict are never
    called (TorchScript unrolls them), so their level is missing: find it in the tree.
    """
    path: list[str] = []
    module: Any = root
    module_type = None
    for name, type_name in _HIERARCHY_PART.findall(hierarchy):
        if name == "UNKNOWN_INSTANCE":  # a function call inside the module: stop there
            break
        if name == "SELF":  # a method of the same module
            continue
        found = _find_called_child(module, name, type_name)
        if found is None:  # not in the tree: keep the hierarchy's own name
            path.append(name)
        else:
            path.extend(found[0])
            module = found[1]
        module_type = type_name
    return CallOrigin(".".join(path), module_type)


_CONTAINERS = frozenset({"ModuleList", "ModuleDict"})


def _find_called_child(module: Any, name: str, type_name: str) -> tuple[list[str], Any] | None:
    """The child `name` of `module`, looking through ModuleList / ModuleDict levels."""
    children = dict(module.named_children()) if module is not None else {}
    if name in children:
        return [name], children[name]
    for child_name, child in children.items():
        if getattr(child, "original_name", type(child).__name__) in _CONTAINERS:
            found = _find_called_child(child, name, type_name)
            if found is not None and getattr(found[1], "original_name", None) in (type_name, None):
                return [child_name, *found[0]], found[1]
    return None


def is_export_candidate(node: torch.fx.Node) -> bool:
    """A torch.export graph node that makes a candidate call (see kinds.is_graph_candidate)."""
    if node.op != "call_function" or not hasattr(node.target, "_overloadpacket"):
        return False
    return is_graph_candidate(getattr(node.target, "namespace", "aten"), node.target._overloadpacket.__name__)


def export_origins(graph: torch.fx.Graph) -> GraphOrigins:
    """From torch.export node metadata: nn_module_stack, outermost first."""
    origins = []
    for node in graph.nodes:
        if not is_export_candidate(node):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            origins.append(UNKNOWN)
            continue
        path, type_name = list(stack.values())[-1]
        type_str = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
        origins.append(CallOrigin(path, type_str.rsplit(".", 1)[-1]))
    return GraphOrigins(origins)
