"""Prune dead channels of a torch model (eager nn.Module or torch.export program).

The plan comes from a torch.export graph of the model, where every weight is a get_attr
node named by its state-dict key: the activation's producer chain (Conv / Linear, then
an optional BatchNorm) and its consumers (analysis/consumers.py). The rewrite slices
those parameters and buffers in a copy of the model, by name; Conv, Linear and
BatchNorm modules also get their channel counts updated. A program is exported again
from its sliced module, with its own example inputs and dynamic dimensions.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import UserError, summarize_exception
from .plan import LeftAlone
from .prune_plan import PruneGroup, PrunePlan

_BN = ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm")
_PRODUCERS = ("conv1d", "conv2d", "conv3d", "convolution", "linear")


def plan_prune_torch(gm: fx.GraphModule, sites: dict[str, fx.Node], targets: dict[str, tuple[list[int], int, int]],
                     source: str) -> PrunePlan:
    """`targets`: site name -> (neurons to remove, neuron axis, neurons of the site)."""
    from ..analysis.consumers import find_consumers

    plan = PrunePlan(source)
    for name, (neurons, axis, total) in targets.items():
        node = sites.get(name)
        if node is None:
            plan.left_alone.append(LeftAlone(name, len(neurons), "torch.export does not see this site"))
            continue
        if len(neurons) >= total:
            plan.left_alone.append(LeftAlone(name, len(neurons), "every neuron of the site is dead: removing them "
                                             "all would leave an empty layer"))
            continue
        chain = _producer_chain(node, axis)
        if isinstance(chain, str):
            plan.left_alone.append(LeftAlone(name, len(neurons), chain))
            continue
        found = find_consumers(gm, node, axis)
        if found.reason is not None:
            plan.left_alone.append(LeftAlone(name, len(neurons), found.reason))
            continue
        producer, bias, bn = chain
        plan.groups.append(PruneGroup(name, sorted(neurons), total, producer, bias, bn,
                                      [(c.param, c.kind, c.block, c.groups) for c in found.cuts]))
    return plan


def _producer_chain(node: fx.Node, axis: int) -> tuple[str, str | None, list[str]] | str:
    """(producer weight, its bias, BatchNorm tensors) feeding the activation `node`, or why not."""
    x = node.args[0] if node.args else None
    bn: list[str] = []
    if not isinstance(x, fx.Node):
        return "its input is not a layer's output"
    if len(x.users) != 1:
        return "its input is also read elsewhere (a residual branch)"
    op = _packet(x)
    if op == "getitem":  # (out, mean, rstd) of a decomposed batch norm
        x = x.args[0] if isinstance(x.args[0], fx.Node) else x
        op = _packet(x)
    if op in _BN:
        params = [x.args[i] if len(x.args) > i else None for i in (1, 2, 3, 4)]
        if not all(isinstance(p, fx.Node) and p.op == "get_attr" for p in params):
            return "its BatchNorm has no affine parameters or running statistics"
        bn = [str(p.target) for p in params]  # type: ignore[union-attr]
        x = x.args[0]
        if not isinstance(x, fx.Node) or len(x.users) != 1:
            return "the BatchNorm's input is also read elsewhere"
        op = _packet(x)
    if op not in _PRODUCERS:
        what = f"aten.{op}" if op else "not a layer"
        kind = "a residual add" if op == "add" else "a concat" if op == "cat" else what
        return f"its input comes from {kind}, which ties its channels to other layers"
    weight = x.args[1] if len(x.args) > 1 else None
    bias = x.args[2] if len(x.args) > 2 else x.kwargs.get("bias")
    if not isinstance(weight, fx.Node) or weight.op != "get_attr" or len(weight.users) != 1:
        return "its producing layer's weight is computed or shared"
    if bias is not None and (not isinstance(bias, fx.Node) or bias.op != "get_attr"):
        return "its producing layer's bias is computed"
    if op != "linear":
        groups: Any = x.args[8 if op == "convolution" else 6] if len(x.args) > (8 if op == "convolution" else 6) else 1
        if int(groups) != 1:
            return "its producing convolution is grouped (its channels are tied to its inputs)"
        if op == "convolution" and len(x.args) > 6 and x.args[6]:
            return "its producing convolution is transposed"
        if axis != 1:
            return "its neuron axis is not the convolution's channel axis"
    return str(weight.target), str(bias.target) if isinstance(bias, fx.Node) else None, bn


def _packet(node: fx.Node) -> str | None:
    target = node.target
    if node.op == "call_function" and hasattr(target, "_overloadpacket"):
        return str(target._overloadpacket.__name__)  # type: ignore[union-attr]
    if node.op == "call_function":
        return getattr(target, "__name__", None)
    return None


def slice_model(root: nn.Module, plan: PrunePlan) -> None:
    """Remove the plan's channels from `root` in place (call it on a copy)."""
    for group in plan.groups:
        keep = [i for i in range(group.total) if i not in set(group.neurons)]
        _slice(root, group.producer, 0, keep)
        if group.producer_bias:
            _slice(root, group.producer_bias, 0, keep)
        for name in group.batch_norm:
            _slice(root, name, 0, keep)
        for weight, kind, block, groups in group.consumers:
            if kind == "conv" and groups != 1:
                raise UserError(f"site {group.site} feeds a grouped convolution ({weight})",
                                "Prune with --select / --ignore to leave it out.")
            cols = [c * block + j for c in keep for j in range(block)]
            _slice(root, weight, 1, cols)


def _slice(root: nn.Module, name: str, dim: int, keep: Sequence[int]) -> None:
    path, _, attr = name.rpartition(".")
    owner = root.get_submodule(path) if path else root
    old = getattr(owner, attr)
    index = torch.tensor(list(keep), dtype=torch.long, device=old.device)
    new = old.detach().index_select(dim, index).clone()
    if isinstance(old, nn.Parameter):
        setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        owner.register_buffer(attr, new, persistent=attr not in owner._non_persistent_buffers_set)
    size = len(keep)
    if isinstance(owner, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and attr == "weight":
        if dim == 0:
            owner.out_channels = size
        else:
            owner.in_channels = size
    elif isinstance(owner, nn.Linear) and attr == "weight":
        if dim == 0:
            owner.out_features = size
        else:
            owner.in_features = size
    elif isinstance(owner, nn.modules.batchnorm._BatchNorm):
        owner.num_features = size


def export_graph(obj: Any, example: Sequence[torch.Tensor] | None) -> fx.GraphModule:
    """A torch.export graph module of the model (its own for a .pt2)."""
    if isinstance(obj, torch.export.ExportedProgram):
        return obj.module()
    if example is None:
        raise UserError("prune needs example inputs to trace the model", "Pass --data or --input-shape.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(copy.deepcopy(obj).eval(), tuple(example), strict=False).module()
    except Exception as e:
        raise UserError(f"prune reads the model's layers with torch.export, which fails on this model: "
                        f"{summarize_exception(e)}", "Prune an ONNX export of the model instead.") from None


def prune_torch(obj: Any, plan: PrunePlan, example: Sequence[torch.Tensor] | None) -> Any:
    """A pruned copy of an nn.Module or ExportedProgram."""
    if isinstance(obj, torch.export.ExportedProgram):
        from .torch_export import _dynamic_shapes, _example

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            gm = copy.deepcopy(obj.module())
        slice_model(gm, plan)
        args, kwargs = _example(obj, example)
        dynamic = _dynamic_shapes(obj, gm.forward, args, kwargs)
        try:
            return torch.export.export(gm, tuple(args), kwargs, dynamic_shapes=dynamic, strict=False)
        except Exception as e:
            raise RuntimeError(f"exporting the pruned program failed: {summarize_exception(e)}") from e
    model = copy.deepcopy(obj)
    slice_model(model, plan)
    return model
