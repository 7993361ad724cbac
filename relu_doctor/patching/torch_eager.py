"""Patch an eager nn.Module per call site, keeping its module tree.

Two rewrites, chosen per site:

- an activation module called once per forward (`self.relu1`, `net.1` of a Sequential)
  is swapped for a small fx GraphModule computing the leak;
- any other site (a shared `self.relu` called three times, `F.relu` / `x.relu()` /
  `clamp(min=0)` in a forward) is rewritten in the graph of the module whose forward
  makes the call (its *owner*), traced by torch.fx one level deep: the owner's children
  stay modules, so paths, parameters and the state dict keys do not change.

A swapped-in module computes out of place: a forward that reads the input of an in-place
activation module (`nn.ReLU(inplace=True)`) after calling it would see it unactivated;
rewritten calls in a traced owner keep that meaning (later readers get the leak's output).

Which graph node is which site is learned by running the model once: each traced owner
runs node by node (an fx Interpreter) while a dispatch mode names every activation call
with the scan's own rule (backends/torch_naming.py), so a node is tied to a site name
only when the call it makes is that site, and its output is that call's output.
"""

from __future__ import annotations

import copy
import inspect
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..backends.torch_calls import ActivationCall, ActivationCalls
from ..backends.torch_naming import CallOrigin, EagerModuleTracker, site_name
from ..errors import UserError, summarize_exception
from ..kinds import ACTIVATION_MODULES
from .plan import PatchPlan, SitePatch
from .torch_graph import leak_module, replace_site

_TRACE_HINT = ("Skip those sites with --ignore, or patch a torch.export (.pt2) or ONNX export of the model "
               "(their graphs are rewritten directly).")


@dataclass
class _Hit:
    """One activation call seen while mapping, and the graph node that made it (if any)."""

    name: str
    aten: str
    dtype: torch.dtype
    device: torch.device
    owner: str | None = None
    node: fx.Node | None = None
    out: Any = None  # held until the node returns, to check that the node returns it
    exact: bool = False  # the node's result is this call's output, and it made no other


@dataclass
class _Mapping:
    hits: list[_Hit] = field(default_factory=list)
    frames: list[tuple[str, fx.Node]] = field(default_factory=list)  # running traced nodes


class _ShallowTracer(fx.Tracer):
    """Traces one forward only: every child module stays a call_module node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def patch_module(model: nn.Module, plan: PatchPlan, example: Sequence[torch.Tensor],
                 include_smooth: bool = False) -> tuple[nn.Module, list[str]]:
    """A patched copy of `model` (the original is not touched) and warnings."""
    work = copy.deepcopy(model)
    training = {path: m.training for path, m in work.named_modules()}
    work.eval()  # the mapping run must not update batch-norm statistics or drop out
    warnings: list[str] = []
    modules = dict(work.named_modules())
    single: dict[str, SitePatch] = {}
    owners: set[str] = set()
    for p in plan.sites:
        base, _, call = p.name.partition("#")
        module = modules.get(base) if "/" not in p.name else None
        if module is not None and type(module).__name__ in ACTIVATION_MODULES and not call \
                and f"{base}#2" not in plan.site_names:
            single[base] = p
        else:
            owners.add(p.name.rsplit("/", 1)[0] if "/" in p.name else base.rpartition(".")[0])
    traced: dict[str, fx.GraphModule] = {}
    for path in sorted(owners, key=len):
        if path not in modules:
            raise UserError(f"the report names sites inside {path!r}, but the model has no such module",
                            "Patch with a report of this model (scan it again).")
        traced[path], warning = _shallow_trace(modules[path], path)
        if warning:
            warnings.append(warning)
        work = _set_module(work, path, traced[path])
    hits = _map_calls(work, traced, example, include_smooth)
    _check_names([h.name for h in hits], plan)
    _rewrite_owners(traced, hits, plan, single)
    for base, p in single.items():
        hit = next(h for h in hits if h.name == p.name)
        work = _set_module(work, base, leak_module(p, hit.dtype, hit.device))
    for path, m in work.named_modules():
        m.training = training.get(path, m.training)
    return work, warnings


def _shallow_trace(module: nn.Module, path: str) -> tuple[fx.GraphModule, str | None]:
    """fx-trace `module`'s own forward; keep what the trace would drop (unused children, attributes)."""
    where = f"module {path!r}" if path else "the top-level module"
    try:
        graph = _ShallowTracer().trace(module)
        was = module.training
        module.training = not was
        try:
            other = _ShallowTracer().trace(module)
        finally:
            module.training = was
    except Exception as e:
        raise UserError(f"cannot patch the activations called in {where}: torch.fx cannot trace its forward "
                        f"({summarize_exception(e)})", _TRACE_HINT) from None
    branches = other.python_code("self").src != graph.python_code("self").src
    for node in graph.nodes:
        if isinstance(node.type, str):  # a postponed annotation ("torch.Tensor"): code that
            node.type = None  # names it would neither pickle nor script
    gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
    gm.training = module.training
    for name, child in module.named_children():
        if name not in gm._modules:
            gm.add_module(name, child)
    for name, buf in module.named_buffers(recurse=False):
        persistent = name not in module._non_persistent_buffers_set
        gm.register_buffer(name, buf, persistent=persistent)
    for name, param in module.named_parameters(recurse=False):
        if name not in gm._parameters:
            gm.register_parameter(name, param)
    for name, value in vars(module).items():
        if not name.startswith("_") and name != "training" and not hasattr(gm, name):
            setattr(gm, name, value)
    warning = None
    if branches:
        warning = (f"{where} branches on self.training: its patched copy keeps the eval-mode branch "
                   "(fine for inference; check before fine-tuning)")
    return gm, warning


def _set_module(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` at `path` (the root itself for ""); return the (possibly new) root."""
    if not path:
        return new
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)
    return root


class _Interpreter(fx.Interpreter):
    """Runs a traced owner node by node, recording which node is running."""

    def __init__(self, gm: fx.GraphModule, path: str, mapping: _Mapping) -> None:
        super().__init__(gm)
        self.path, self.mapping = path, mapping

    def run_node(self, n: fx.Node) -> Any:
        self.mapping.frames.append((self.path, n))
        before = len(self.mapping.hits)
        try:
            result = super().run_node(n)
        finally:
            self.mapping.frames.pop()
        mine = [h for h in self.mapping.hits[before:] if h.node is n]
        for h in mine:
            h.exact = len(mine) == 1 and h.out is result
            h.out = None
        return result


class _MappingMode(ActivationCalls):
    def __init__(self, tracker: EagerModuleTracker, mapping: _Mapping, include_smooth: bool) -> None:
        super().__init__(include_smooth, tracker)
        self.tracker, self.mapping = tracker, mapping
        self.counts: dict[str, int] = {}

    def _origin(self, index: int, qualified: str) -> Any:
        # the module and the traced node running at the call (the capture's naming rule)
        return self.tracker.origin(index), (self.mapping.frames[-1] if self.mapping.frames else None)

    def on_call(self, call: ActivationCall) -> None:
        origin, frame = call.origin
        out = call.output
        hit = _Hit(site_name(origin, call.activation.kind, self.counts), call.op, out.dtype, out.device)
        if frame is not None and not call.fused:
            self._locate(hit, origin, frame, out)
        self.mapping.hits.append(hit)

    def _locate(self, hit: _Hit, origin: CallOrigin, frame: tuple[str, fx.Node], out: Any) -> None:
        path, node = frame
        if origin.is_activation_module:
            target = f"{path}.{node.target}" if path else str(node.target)
            ok = node.op == "call_module" and target == origin.path
        else:
            ok = node.op in ("call_function", "call_method") and origin.path == path
        if ok:
            hit.owner, hit.node, hit.out = path, node, out


def _map_calls(work: nn.Module, traced: dict[str, fx.GraphModule], example: Sequence[torch.Tensor],
               include_smooth: bool) -> list[_Hit]:
    """Run `work` once on `example`; every activation call, named, with its node where traced."""
    mapping = _Mapping()
    for path, gm in traced.items():
        signature = inspect.signature(gm.forward)

        def run(self: fx.GraphModule, *args: Any, _path: str = path, _sig: Any = signature, **kwargs: Any) -> Any:
            bound = _sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return _Interpreter(self, _path, mapping).run(*bound.arguments.values())

        gm.forward = types.MethodType(run, gm)
    tracker = EagerModuleTracker(work)
    try:
        mode = _MappingMode(tracker, mapping, include_smooth)
        with torch.inference_mode(), mode:
            work(*example)
        mode.finish_pass()
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"the model failed while its activation calls were mapped: {summarize_exception(e)}",
                        "Check --input-shape / --data against what the model expects.") from None
    finally:
        tracker.close()
        for gm in traced.values():
            del gm.forward
    return mapping.hits


def _check_names(names: list[str], plan: PatchPlan) -> None:
    if names != plan.site_names:
        raise UserError("the report's sites are not this model's activation calls "
                        f"({len(plan.site_names)} in the report, {len(names)} in the model)",
                        "Patch with a report of this model (scan it again).")


def _rewrite_owners(traced: dict[str, fx.GraphModule], hits: list[_Hit], plan: PatchPlan,
                    single: dict[str, SitePatch]) -> None:
    by_name = plan.by_name()
    singles = {p.name for p in single.values()}
    per_node: dict[fx.Node, list[_Hit]] = {}
    for h in hits:
        if h.name in by_name and h.name not in singles and (h.node is None or not h.exact):
            raise UserError(f"cannot locate the call of site {h.name} in the traced forward of its module",
                            _TRACE_HINT)
        if h.node is not None and h.exact and h.name not in singles:
            per_node.setdefault(h.node, []).append(h)
    owner_of = {h.node: traced[h.owner] for h in hits if h.node is not None and h.owner is not None}
    for node, node_hits in per_node.items():
        patches = [by_name.get(h.name) for h in node_hits]
        if not any(patches):
            continue
        first = patches[0]
        if first is None or any(p is None or not p.same_rewrite(first) for p in patches):
            names = ", ".join(h.name for h in node_hits)
            raise UserError(f"sites {names} are one call in the code (a module run several times) and "
                            "cannot be patched differently", "Select all of them or none, or use --mode layer.")
        replace_site(owner_of[node], node, first, node_hits[0].dtype, inplace=node_hits[0].aten.endswith("_"))
    for gm in traced.values():
        gm.graph.lint()
        gm.recompile()
