"""Which layer makes an activation's neurons, in a torch.fx graph (fx_graphs.py): the Conv
or Linear feeding it, and a BatchNorm between them, when nothing else ties their channels.

For `prune` (slice the producer's output channels) and relu_doctor.revive() in training
(ReDo: re-initialise the producer's row). The layer must be read by the activation alone
and own its weight: a residual add, a concat, a grouped or transposed convolution or a
shared weight ties the channels to other layers, and the answer is then why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx, nn

from .fx_nodes import CONV_MODULES, conv_groups, node_rank, op_name, param_uses

_PRODUCERS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "linear"})
_BN = frozenset({"batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"})
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


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


def find_producer(gm: fx.GraphModule, node: fx.Node, axis: int, rank: int | None = None) -> Producer | str:
    """The Conv / Linear (then optionally a BatchNorm) feeding the activation `node`, read by
    nothing else, with a weight used nowhere else; or why not."""
    uses = param_uses(gm)
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node):
        return "its input is not a layer's output"
    if len(x.users) != 1:
        return "its input is also read elsewhere (a residual branch)"
    if x.op == "call_module":
        return _module_producer(gm, x, axis, node_rank(node) or rank, uses)
    norm: list[str] = []
    op = op_name(x)
    if op == "getitem":  # (out, mean, rstd) of a decomposed batch norm
        x = x.args[0] if isinstance(x.args[0], fx.Node) else x
        op = op_name(x)
    if op in _BN:
        params = [x.args[i] if len(x.args) > i else None for i in (1, 2, 3, 4)]
        if not all(isinstance(p, fx.Node) and p.op == "get_attr" for p in params):
            return "its BatchNorm has no affine parameters or running statistics"
        norm = [str(p.target) for p in params]  # type: ignore[union-attr]
        x = x.args[0]
        if not isinstance(x, fx.Node) or len(x.users) != 1:
            return "the BatchNorm's input is also read elsewhere"
        op = op_name(x)
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
    if op == "linear" and (out_rank := node_rank(node) or rank) is not None and axis != out_rank - 1:
        return "its neuron axis is not the linear layer's output features"
    if op != "linear":
        if conv_groups(op, x) != 1:
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
    if not isinstance(module, (nn.Linear, *CONV_MODULES)):
        what = f"{type(module).__name__} {x.target}" if module is not None else (op_name(x) or x.op)
        return f"its input is not made by a Linear or Conv layer ({what})"
    if isinstance(module, CONV_MODULES) and (module.groups != 1 or axis != 1):
        return f"its producing convolution {x.target} is grouped or its neuron axis is not the channel axis"
    if isinstance(module, nn.Linear) and rank is not None and axis != rank - 1:
        return f"its neuron axis is not the output features of {x.target}"
    weight = f"{x.target}.weight"
    if uses.get(weight, 0) > 1:
        return f"its producer {x.target} is called more than once (its weight is shared)"
    return Producer(weight, f"{x.target}.bias" if module.bias is not None else None, norm)
