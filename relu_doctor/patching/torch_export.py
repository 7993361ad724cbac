"""Patch a torch.export program, and export patched eager modules to other formats.

A program's graph names its sites without running it: candidate nodes run in graph
order, `export_origins` gives each one's module from `nn_module_stack`, and the scan's
naming rule numbers them. The rewrite edits `ExportedProgram.module()` (a GraphModule
whose nodes keep that metadata) and exports it again with the original's example inputs
and dynamic dimensions, so the patched program takes the same input shapes.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.export import Dim, ExportedProgram
from torch.utils import _pytree as pytree

from ..backends.torch_naming import export_origins, is_export_candidate, site_name
from ..errors import UserError, summarize_exception
from ..kinds import classify_aten, fused_kernel
from ..kinds import torch_hard_swish as hard_swish
from .plan import PatchPlan
from .torch_graph import replace_site


def graph_sites(graph: fx.Graph, include_smooth: bool = False,
                fused: set[str] | None = None) -> list[tuple[str, fx.Node]]:
    """Every activation site of an export graph, in execution order, with its node; the
    names of sites inside fused kernels are added to `fused`."""
    fused = set() if fused is None else fused
    origins = export_origins(graph)
    counts: dict[str, int] = {}
    sites = []
    index = 0
    for node in graph.nodes:
        # the same candidates, in the same order, as export_origins lists
        if not is_export_candidate(node):
            continue
        op = node.target._overloadpacket.__name__  # type: ignore[union-attr]
        origin = origins.origin(index)
        index += 1
        kernel = fused_kernel(getattr(node.target, "namespace", "aten"), op)
        if kernel is not None:  # sites the capture measures inside a fused kernel: named, never patched
            for kind in kernel.kinds(tuple(node.args), dict(node.kwargs), include_smooth):
                sites.append((site_name(origin, kind, counts), node))
                fused.add(sites[-1][0])
            continue
        activation = classify_aten(op, tuple(node.args), dict(node.kwargs), include_smooth)
        val = node.meta.get("val")
        if activation is None or not (isinstance(val, torch.Tensor) and val.is_floating_point()):
            continue
        if activation.kind == hard_swish.RELU6:  # the capture's rule for hand-written hard-swish
            outcome = hard_swish.graph_outcome(node)
            if outcome == hard_swish.HARD_SIGMOID or (outcome == hard_swish.HARD_SWISH and not include_smooth):
                continue
            if outcome == hard_swish.HARD_SWISH:
                sites.append((site_name(origin, "hardswish", counts), node))
                continue
        sites.append((site_name(origin, activation.kind, counts), node))
    return sites


def patch_exported(program: ExportedProgram, plan: PatchPlan, example: Sequence[torch.Tensor] | None = None,
                   include_smooth: bool = False) -> ExportedProgram:
    """A new program with the plan's sites leaking (the given one is not changed)."""
    # module() shares the program's weights: a copy, so the new program never aliases the old one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, on copy
        gm = copy.deepcopy(program.module())
    fused: set[str] = set()
    sites = graph_sites(gm.graph, include_smooth, fused)
    names = [name for name, _ in sites]
    if names != plan.site_names:
        raise UserError("the report's sites are not this program's activation calls "
                        f"({len(plan.site_names)} in the report, {len(names)} in the program)",
                        "Patch with a report of this model (scan it again).")
    by_name = plan.by_name()
    blocked = sorted(fused & set(by_name))
    if blocked:
        raise UserError(f"site {blocked[0]} is applied inside a fused kernel "
                        f"({dict(sites)[blocked[0]].target}): it cannot be patched",
                        f"Skip it with --ignore '{blocked[0]}'.")
    for name, node in sites:
        if name in by_name:
            replace_site(gm, node, by_name[name], node.meta["val"].dtype)
    gm.graph.lint()
    gm.recompile()
    return reexport(program, gm, example, "patched")


def reexport(program: ExportedProgram, gm: nn.Module, example: Sequence[torch.Tensor] | None,
             what: str) -> ExportedProgram:
    """`gm` (a rewritten copy of `program`'s module) exported as a program, with the program's
    example inputs and dynamic dimensions; `what` ("patched", "pruned") names it in the error."""
    args, kwargs = _example(program, example)
    dynamic = _dynamic_shapes(program, gm.forward, args, kwargs)
    try:
        return torch.export.export(gm, tuple(args), kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as e:
        raise RuntimeError(f"exporting the {what} program failed: {summarize_exception(e)}") from e


def _example(program: ExportedProgram, example: Sequence[torch.Tensor] | None) -> tuple[tuple, dict]:
    stored = getattr(program, "example_inputs", None)
    if stored is not None:
        args, kwargs = stored
        return tuple(args), dict(kwargs)
    if example is None:
        raise UserError("this .pt2 holds no example inputs to export the patched program with",
                        "Pass --data or --input-shape.")
    return tuple(example), {}


def _dynamic_shapes(program: ExportedProgram, forward: Any, args: tuple, kwargs: dict) -> Any:
    """The original's dynamic dims, as `dynamic_shapes` for the same (args, kwargs)."""
    placeholders = [n for n in program.graph.nodes
                    if n.op == "placeholder" and n.name in set(program.graph_signature.user_inputs)]
    leaves, spec = pytree.tree_flatten((args, kwargs))
    if len(leaves) != len(placeholders):
        return None
    dims: dict[Any, Any] = {}
    shapes = [_leaf_shape(n.meta.get("val"), program, dims) for n in placeholders]
    if not any(shapes):
        return None
    shaped_args, shaped_kwargs = pytree.tree_unflatten(shapes, spec)
    if not shaped_kwargs:
        return tuple(shaped_args)
    names = list(inspect.signature(forward).parameters)
    return {**dict(zip(names, shaped_args)), **shaped_kwargs}


def _leaf_shape(val: Any, program: ExportedProgram, dims: dict[Any, Any]) -> dict[int, Any] | None:
    if not isinstance(val, torch.Tensor):
        return None
    shape: dict[int, Any] = {}
    for i, d in enumerate(val.shape):
        if isinstance(d, int):
            continue
        expr = d.node.expr
        if expr not in dims:
            dims[expr] = _dim(expr, program) if expr.is_Symbol else Dim.AUTO
        shape[i] = dims[expr]
    return shape or None


def _dim(symbol: Any, program: ExportedProgram) -> Any:
    bounds = program.range_constraints.get(symbol)
    lower, upper = (_int_or_none(bounds.lower), _int_or_none(bounds.upper)) if bounds is not None else (None, None)
    kwargs = {k: v for k, v in (("min", lower), ("max", upper)) if v is not None}
    return Dim(str(symbol), **kwargs)


def _int_or_none(value: Any) -> int | None:
    """A finite bound as an int; None for the unbounded (sympy's int_oo / oo)."""
    if not getattr(value, "is_finite", True) or not getattr(value, "is_integer", True):
        return None
    try:
        return int(value)
    except Exception:  # sympy raises odd types for symbolic values
        return None


# ---- a patched eager module in another format (--to) -------------------------------------


def export_module(module: nn.Module, example: Sequence[torch.Tensor]) -> tuple[ExportedProgram, list[str]]:
    """torch.export with a dynamic batch dimension (static if the model cannot take one)."""
    batch = Dim("batch", min=1)
    module = module.eval()
    try:
        return torch.export.export(module, tuple(example), dynamic_shapes=tuple({0: batch} for _ in example),
                                   strict=False), []
    except Exception:
        pass
    try:
        program = torch.export.export(module, tuple(example), strict=False)
    except Exception as e:
        raise UserError(f"torch.export cannot export the patched model: {summarize_exception(e)}",
                        "Write another format with --to.") from None
    return program, [f"the .pt2 takes batches of exactly {example[0].shape[0]}: the model did not export with a "
                     "dynamic batch dimension"]


def script_module(module: nn.Module, example: Sequence[torch.Tensor]) -> tuple[torch.jit.ScriptModule, list[str]]:
    """torch.jit.script, or torch.jit.trace when the model does not script."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated: that is the user's choice here
        try:
            return torch.jit.script(module), []
        except Exception:
            pass
        try:
            with torch.no_grad():
                return torch.jit.trace(module.eval(), tuple(example)), [
                    "the model does not script: the TorchScript output is a trace (fixed control flow)"]
        except Exception as e:
            raise UserError(f"cannot convert the patched model to TorchScript: {summarize_exception(e)}",
                            "Write another format with --to.") from None
