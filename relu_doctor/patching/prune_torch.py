"""Prune dead channels of a torch model (eager nn.Module or torch.export program).

The plan comes from a torch.export graph of the model, where every weight is a get_attr
node named by its state-dict key: the activation's producer chain (Conv / Linear, then
an optional BatchNorm: analysis/producers.py) and its consumers (analysis/consumers.py).
The rewrite slices those parameters and buffers in a copy of the model, by name; Conv,
Linear and BatchNorm modules also get their channel counts updated. A program is exported again
from its sliced module, with its own example inputs and dynamic dimensions.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import UserError
from .plan import LeftAlone
from .prune_plan import PruneGroup, PrunePlan


def plan_prune_torch(gm: fx.GraphModule, sites: dict[str, fx.Node], targets: dict[str, tuple[list[int], int, int]],
                     source: str) -> PrunePlan:
    """`targets`: site name -> (neurons to remove, neuron axis, neurons of the site)."""
    from ..analysis.consumers import find_consumers
    from ..analysis.producers import find_producer

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
        producer = find_producer(gm, node, axis)
        if isinstance(producer, str):
            plan.left_alone.append(LeftAlone(name, len(neurons), producer))
            continue
        found = find_consumers(gm, node, axis)
        if found.reason is not None:
            plan.left_alone.append(LeftAlone(name, len(neurons), found.reason))
            continue
        plan.groups.append(PruneGroup(name, sorted(neurons), total, producer.weight, producer.bias, producer.norm,
                                      [(c.param, c.kind, c.block, c.groups) for c in found.cuts]))
    return plan


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


def prune_torch(obj: Any, plan: PrunePlan, example: Sequence[torch.Tensor] | None) -> Any:
    """A pruned copy of an nn.Module or ExportedProgram."""
    if isinstance(obj, torch.export.ExportedProgram):
        from .torch_export import reexport

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            gm = copy.deepcopy(obj.module())
        slice_model(gm, plan)
        return reexport(obj, gm, example, "pruned")
    model = copy.deepcopy(obj)
    slice_model(model, plan)
    return model
