"""Which layers make an activation's neurons and which read them, in a torch.fx graph.

The one place that answers it, for `patch --mode revive` (zero the weights that read a
dead neuron so the function does not change), `prune` (slice the producer's output
channels and the consumers' input channels) and relu_doctor.revive() in training
(ReDo: re-initialise the producer's row, zero the consumers' columns).

Two kinds of graph, one walk:
- torch.export graphs (patch, prune; a .pt2 brings its own): weights are get_attr nodes
  named by their state-dict key, ops are aten calls, every node knows its shape.
- torch.fx.symbolic_trace graphs (revive() in training: the live model, no example
  input at hand): torch.nn layers stay call_module nodes and nodes carry no shapes, so
  the walk carries the rank itself, and a flatten's block of features per neuron is
  read off the consumer's width (block 0 below).

From the activation's output the walk follows every user. Ops that keep each channel
apart (pooling, dropout, copies, a mean over positions, flatten) pass the neurons on
(flatten turns channel c into a block of features); a Conv or Linear whose weight is a
parameter used nowhere else is a consumer. Anything else (a residual add, a concat, a
multiplication, the model's output) reads the neurons in a way no weight can undo: the
walk gives up and says which op it met.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..errors import UserError, summarize_exception
from .ties import TIES

# aten ops (packet names) that map channel c of their first input to channel c of the output
_CHANNEL_LOCAL = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool2d", "max_pool2d_with_indices", "dropout",
    "feature_dropout", "clone", "contiguous", "detach", "alias", "_to_copy", "to", "upsample_nearest2d",
    "upsample_bilinear2d", "constant_pad_nd",
})
_ELEMENTWISE = frozenset({"dropout", "clone", "contiguous", "detach", "alias", "_to_copy", "to"})
_CONV = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution"})
_PRODUCERS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "linear"})
_BN = frozenset({"batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"})
_LOCAL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                  nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                  nn.AlphaDropout, nn.Identity)
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


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

    def input_columns(self, neuron: int) -> range:
        return range(neuron * self.block, (neuron + 1) * self.block)

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


@dataclass(frozen=True)
class Producer:
    """The Conv / Linear making an activation's input, and a BatchNorm between them."""

    weight: str  # state-dict key of its weight
    bias: str | None
    norm: list[str] = field(default_factory=list)  # the BatchNorm's per-channel tensors (scale, shift, mean, var)

    @property
    def module(self) -> str:
        return self.weight.rpartition(".")[0]

    @property
    def norm_module(self) -> str | None:
        return self.norm[0].rpartition(".")[0] if self.norm else None


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


def find_consumers(gm: fx.GraphModule, node: fx.Node, axis: int, rank: int | None = None) -> Consumers:
    """The weights reading `node`'s neurons along `axis` (of the batched output), or why none can.
    `rank`: the output's rank, for a graph whose nodes carry no shapes (symbolic_trace)."""
    uses = _param_uses(gm)
    cuts: list[WeightCut] = []
    todo: list[tuple[fx.Node, int, int, int | None]] = [(node, axis, 1, _rank(node) or rank)]
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


def _rank(node: fx.Node) -> int | None:
    shape = _shape(node)
    return len(shape) if shape is not None else None


def _shape(node: fx.Node) -> list[int] | None:
    val = node.meta.get("val", node.meta.get("tensor_meta"))
    shape = getattr(val, "shape", None)
    return [int(d) if isinstance(d, int) else -1 for d in shape] if shape is not None else None


def _step(gm: fx.GraphModule, user: fx.Node, x: fx.Node, axis: int, block: int, rank: int | None,
          uses: dict[str, int]) -> WeightCut | tuple[fx.Node, int, int, int | None] | str:
    """One user of the neurons: a consumer, the next node to follow (node, axis, block, rank), or a reason."""
    if user.op == "output":
        return "they reach the model's output"
    if user.op == "call_module":
        return _module_step(gm, user, x, axis, block, rank, uses)
    op = _op_name(user)
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
        if _op_name(x) in ("max_pool2d_with_indices", "max_pool1d_with_indices", "max_pool3d_with_indices") \
                and len(user.args) > 1 and user.args[1] == 0:
            return (user, axis, block, rank)
        return "indexing reads them"
    if op in ("mean", "sum", "amax") and axis == 1 and rank is not None:
        raw: Any = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
        dims = [int(d) % rank for d in ([raw] if isinstance(raw, int) else list(raw or []))]
        # reducing positions after the channel axis keeps channel c on axis 1, keepdim or not
        if dims and 0 not in dims and 1 not in dims:
            keep = user.args[2] if len(user.args) > 2 else user.kwargs.get("keepdim", False)
            return (user, 1, block, _rank(user) or (rank if keep else rank - len(set(dims))))
        return f"{op} over the neuron axis"
    if op in ("flatten", "view", "reshape", "_unsafe_view") and axis == 1 and rank is not None:
        before, after = _shape(x), _shape(user)
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
        groups = _conv_groups(op, user)
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
        return (user, axis, block, _rank(user) or rank)
    if isinstance(module, nn.Flatten) and axis == 1 and block == 1 and module.start_dim == 1 \
            and module.end_dim == -1:
        return (user, 1, 0, 2)
    if isinstance(module, _CONV_MODULES) and axis == 1 and block == 1:
        return _cut(f"{user.target}.weight", "conv", 1, module.groups, uses)
    if isinstance(module, nn.Linear) and rank is not None and axis == rank - 1:
        return _cut(f"{user.target}.weight", "linear", block, 1, uses)
    return f"{type(module).__name__} {user.target} reads them"


def _flattens_samples(node: fx.Node) -> bool:
    """torch.flatten(x, 1) or x.flatten(1): samples kept, (C, *spatial) -> features."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return bool(start == 1 and end == -1)


def _conv_groups(op: str, node: fx.Node) -> int:
    index = 8 if op in ("convolution", "_convolution") else 6
    value: Any = node.args[index] if len(node.args) > index else node.kwargs.get("groups", 1)
    return int(value)


def _op_name(node: fx.Node) -> str | None:
    if node.op == "call_function":
        target = node.target
        if hasattr(target, "_overloadpacket"):
            return str(target._overloadpacket.__name__)  # type: ignore[union-attr]
        name = getattr(target, "__name__", None)
        return str(name) if name else None
    if node.op == "call_method":
        return str(node.target)
    return None


def _param_uses(gm: fx.GraphModule) -> dict[str, int]:
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


def _cut_node(gm: fx.GraphModule, weight: Any, kind: str, block: int, groups: int,
              uses: dict[str, int]) -> WeightCut | str:
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return f"a {kind} whose weight is computed, not a parameter, reads them"
    return _cut(str(weight.target), kind, block, groups, uses)


def _cut(param: str, kind: str, block: int, groups: int, uses: dict[str, int]) -> WeightCut | str:
    if uses.get(param, 0) > 1:
        return f"the weight {param} is shared with another layer"
    return WeightCut(param, kind, block, groups)


def find_producer(gm: fx.GraphModule, node: fx.Node, axis: int, rank: int | None = None) -> Producer | str:
    """The Conv / Linear (then optionally a BatchNorm) feeding the activation `node`, read by
    nothing else, with a weight used nowhere else; or why not."""
    uses = _param_uses(gm)
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node):
        return "its input is not a layer's output"
    if len(x.users) != 1:
        return "its input is also read elsewhere (a residual branch)"
    if x.op == "call_module":
        return _module_producer(gm, x, axis, _rank(node) or rank, uses)
    norm: list[str] = []
    op = _op_name(x)
    if op == "getitem":  # (out, mean, rstd) of a decomposed batch norm
        x = x.args[0] if isinstance(x.args[0], fx.Node) else x
        op = _op_name(x)
    if op in _BN:
        params = [x.args[i] if len(x.args) > i else None for i in (1, 2, 3, 4)]
        if not all(isinstance(p, fx.Node) and p.op == "get_attr" for p in params):
            return "its BatchNorm has no affine parameters or running statistics"
        norm = [str(p.target) for p in params]  # type: ignore[union-attr]
        x = x.args[0]
        if not isinstance(x, fx.Node) or len(x.users) != 1:
            return "the BatchNorm's input is also read elsewhere"
        op = _op_name(x)
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
    if op == "linear" and (out_rank := _rank(node) or rank) is not None and axis != out_rank - 1:
        return "its neuron axis is not the linear layer's output features"
    if op != "linear":
        if _conv_groups(op, x) != 1:
            return "its producing convolution is grouped (its channels are tied to its inputs)"
        if op == "convolution" and len(x.args) > 6 and x.args[6]:
            return "its producing convolution is transposed"
        if axis != 1:
            return "its neuron axis is not the convolution's channel axis"
    return Producer(str(weight.target), str(bias.target) if isinstance(bias, fx.Node) else None, norm)


def _module_producer(gm: fx.GraphModule, x: fx.Node, axis: int, rank: int | None,
                     uses: dict[str, int]) -> Producer | str:
    """find_producer on a symbolic_trace graph: Conv / Linear modules, optionally then a BatchNorm module."""
    norm: list[str] = []
    module: nn.Module | None = gm.get_submodule(str(x.target))
    if isinstance(module, _NORM_MODULES):
        norm = [f"{x.target}.{t}" for t in ("weight", "bias", "running_mean", "running_var")
                if getattr(module, t, None) is not None]
        source = x.args[0] if x.args else None
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return f"its BatchNorm {x.target}'s input is also read elsewhere"
        x = source
        module = gm.get_submodule(str(x.target)) if x.op == "call_module" else None
    if not isinstance(module, (nn.Linear, *_CONV_MODULES)):
        what = f"{type(module).__name__} {x.target}" if module is not None else (_op_name(x) or x.op)
        return f"its input is not made by a Linear or Conv layer ({what})"
    if isinstance(module, _CONV_MODULES) and (module.groups != 1 or axis != 1):
        return f"its producing convolution {x.target} is grouped or its neuron axis is not the channel axis"
    if isinstance(module, nn.Linear) and rank is not None and axis != rank - 1:
        return f"its neuron axis is not the output features of {x.target}"
    weight = f"{x.target}.weight"
    if uses.get(weight, 0) > 1:
        return f"its producer {x.target} is called more than once (its weight is shared)"
    return Producer(weight, f"{x.target}.bias" if module.bias is not None else None, norm)


def trace(model: nn.Module) -> fx.GraphModule | str:
    """A symbolic_trace graph of a live model (no example input needed), or why there is none."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        return f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0][:160]})"


_REVIVED = ("relu", "relu6")  # the kinds whose sites revive() takes from a trace


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
