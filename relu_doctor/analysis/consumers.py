"""Which layers read an activation's neurons, in a torch.fx graph (fx_graphs.py).

The one place that answers it, for `patch --mode revive` (zero the weights that read a
dead neuron so the function does not change), `prune` (slice the consumers' input
channels) and relu_doctor.revive() in training (ReDo: zero the consumers' columns).
The layers that make the neurons are found by producers.py.

From the activation's output the walk follows every user. Ops that keep each channel
apart (pooling, dropout, copies, a mean over positions, flatten) pass the neurons on
(flatten turns channel c into a block of features); a Conv or Linear whose weight is a
parameter used nowhere else is a consumer. Anything else (a residual add, a concat, a
multiplication, the model's output) reads the neurons in a way no weight can undo: the
walk gives up and says which op it met. In a symbolic_trace graph, whose nodes carry no
shapes, the walk carries the rank itself, and a flatten's block of features per neuron
is read off the consumer's width (block 0 below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from .fx_nodes import CONV_MODULES, conv_groups, node_rank, node_shape, op_name, param_uses
from .ties import TIES

# aten ops (packet names) that map channel c of their first input to channel c of the output
# max pools that return (values, indices): the values keep channels apart (getitem 0), indices do not
_PAIRED_POOLS = frozenset({"max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
                           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"})
_CHANNEL_LOCAL = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "dropout", "feature_dropout", "clone", "contiguous", "detach",
    "alias", "_to_copy", "to", "upsample_nearest2d", "upsample_bilinear2d", "constant_pad_nd", *_PAIRED_POOLS,
})
_ELEMENTWISE = frozenset({"dropout", "clone", "contiguous", "detach", "alias", "_to_copy", "to"})
_CONV = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution"})
_LOCAL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                  nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                  nn.AlphaDropout, nn.Identity)


@dataclass(frozen=True)
class WeightCut:
    """Input channel c of a consumer's weight: columns [c * block, (c + 1) * block) of `dim`."""

    param: str  # state-dict key of the weight, e.g. "layer1.0.conv2.weight"
    kind: str  # "conv" or "linear"
    block: int = 1  # features per neuron (flatten of a conv map: H * W); 0: the weight's width / neurons
    groups: int = 1  # conv groups: input channel c only meets its group's output channels

    @property
    def module(self) -> str:
        return self.param.rpartition(".")[0]

    def zero(self, weight: torch.Tensor, neurons: list[int]) -> None:
        """Zero the weights that read `neurons` (in place, under no_grad)."""
        with torch.no_grad():
            if self.kind == "linear":
                for n in neurons:
                    weight[:, n * self.block:(n + 1) * self.block] = 0
                return
            per_group_in = weight.shape[1]
            per_group_out = weight.shape[0] // self.groups
            for n in neurons:
                g = n // per_group_in
                weight[g * per_group_out:(g + 1) * per_group_out, n % per_group_in] = 0


@dataclass
class Consumers:
    cuts: list[WeightCut]
    reason: str | None = None  # why the neurons cannot be cut off (None: they can)


def find_consumers(gm: fx.GraphModule, node: fx.Node, axis: int, rank: int | None = None) -> Consumers:
    """The weights reading `node`'s neurons along `axis` (of the batched output), or why none can.
    `rank`: the output's rank, for a graph whose nodes carry no shapes (symbolic_trace)."""
    uses = param_uses(gm)
    cuts: list[WeightCut] = []
    todo: list[tuple[fx.Node, int, int, int | None]] = [(node, axis, 1, node_rank(node) or rank)]
    while todo:
        current, ax, block, r = todo.pop()
        for user in list(current.users):
            found = _step(gm, user, current, ax, block, r, uses)
            if isinstance(found, str):
                return Consumers([], found)
            if isinstance(found, WeightCut):
                cuts.append(found)
            else:
                todo.append(found)
    if not cuts:
        return Consumers([], "no Conv or Linear reads them")
    return Consumers(cuts)


def _step(gm: fx.GraphModule, user: fx.Node, x: fx.Node, axis: int, block: int, rank: int | None,
          uses: dict[str, int]) -> WeightCut | tuple[fx.Node, int, int, int | None] | str:
    """One user of the neurons: a consumer, the next node to follow (node, axis, block, rank), or a reason."""
    if user.op == "output":
        return "they reach the model's output"
    if user.op == "call_module":
        return _module_step(gm, user, x, axis, block, rank, uses)
    op = op_name(user)
    if op is None:
        return f"{user.target} reads them"
    if op in TIES:
        return TIES[op]
    first = user.args[0] if user.args else None
    if first is not x:
        return f"{op} reads them (not as its input)"
    if op in _ELEMENTWISE:
        return (user, axis, block, rank)
    if op in _CHANNEL_LOCAL and axis == 1:
        return (user, axis, block, rank)
    if op == "getitem":  # of a (values, indices) pair: the values keep channels apart, indices do not
        # (indices that nothing reads, as export leaves them for an adaptive max pool, read nothing)
        if op_name(x) in _PAIRED_POOLS and len(user.args) > 1 and (user.args[1] == 0 or not user.users):
            return (user, axis, block, rank)
        return "indexing reads them"
    if op in ("mean", "sum", "amax") and axis == 1 and rank is not None:
        raw: Any = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
        dims = [int(d) % rank for d in ([raw] if isinstance(raw, int) else list(raw or []))]
        # reducing positions after the channel axis keeps channel c on axis 1, keepdim or not
        if dims and 0 not in dims and 1 not in dims:
            keep = user.args[2] if len(user.args) > 2 else user.kwargs.get("keepdim", False)
            return (user, 1, block, node_rank(user) or (rank if keep else rank - len(set(dims))))
        return f"{op} over the neuron axis"
    if op in ("flatten", "view", "reshape", "_unsafe_view") and axis == 1 and rank is not None:
        before, after = node_shape(x), node_shape(user)
        if before and after and len(after) == 2 and after[0] == before[0] and -1 not in before[1:]:
            per = 1
            for d in before[2:]:
                per *= d
            return (user, 1, block * per, 2)
        if after is None and op == "flatten" and block == 1 and _flattens_samples(user):
            return (user, 1, 0, 2)  # no shapes (symbolic_trace): the consumer's width says the block
        return f"{op} reshapes them"
    if op in _CONV and axis == 1 and block == 1:
        weight = user.args[1] if len(user.args) > 1 else user.kwargs.get("weight")
        groups = conv_groups(op, user)
        if op in ("convolution", "_convolution") and (user.args[6] if len(user.args) > 6 else False):
            return "a transposed convolution reads them"
        return _cut_node(gm, weight, "conv", 1, groups, uses)
    if op == "linear" and rank is not None and axis == rank - 1:
        weight = user.args[1] if len(user.args) > 1 else user.kwargs.get("weight")
        return _cut_node(gm, weight, "linear", block, 1, uses)
    return f"{op} reads them"


def _module_step(gm: fx.GraphModule, user: fx.Node, x: fx.Node, axis: int, block: int, rank: int | None,
                 uses: dict[str, int]) -> WeightCut | tuple[fx.Node, int, int, int | None] | str:
    """A torch.nn layer left whole by symbolic_trace reads the neurons."""
    module = gm.get_submodule(str(user.target))
    if not (user.args and user.args[0] is x):
        return f"{type(module).__name__} {user.target} reads them (not as its input)"
    if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)) \
            or (isinstance(module, _LOCAL_MODULES) and axis == 1):
        return (user, axis, block, node_rank(user) or rank)
    if isinstance(module, nn.Flatten) and axis == 1 and block == 1 and module.start_dim == 1 \
            and module.end_dim == -1:
        return (user, 1, 0, 2)
    if isinstance(module, CONV_MODULES) and axis == 1 and block == 1:
        return _cut(f"{user.target}.weight", "conv", 1, module.groups, uses)
    if isinstance(module, nn.Linear) and rank is not None and axis == rank - 1:
        return _cut(f"{user.target}.weight", "linear", block, 1, uses)
    return f"{type(module).__name__} {user.target} reads them"


def _flattens_samples(node: fx.Node) -> bool:
    """torch.flatten(x, 1) or x.flatten(1): samples kept, (C, *spatial) -> features."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return bool(start == 1 and end == -1)


def _cut_node(gm: fx.GraphModule, weight: Any, kind: str, block: int, groups: int,
              uses: dict[str, int]) -> WeightCut | str:
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return f"a {kind} whose weight is computed, not a parameter, reads them"
    return _cut(str(weight.target), kind, block, groups, uses)


def _cut(param: str, kind: str, block: int, groups: int, uses: dict[str, int]) -> WeightCut | str:
    if uses.get(param, 0) > 1:
        return f"the weight {param} is shared with another layer"
    return WeightCut(param, kind, block, groups)
