"""The activation calls of a torch forward pass: one TorchDispatchMode shared by the
capture, the patcher's call mapping and the patch verification, so all three see the
same sites in the same order.

Every aten call reaches `__torch_dispatch__`. Calls of a kind's op (the kinds registry)
are classified; fused kernels that hold an activation (kinds/fused.py) are measured
from their arguments or reported as not measured; a relu6 of x + 3 waits until the
calls after it say whether it is part of a hand-written hard-swish
(kinds/torch_hard_swish.py). Optionally the mode follows where each tensor's neuron
axis is (kinds/axis.py). Subclasses get each activation as an `ActivationCall`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from types import FunctionType
from typing import Any

import torch
from torch._ops import HigherOrderOperator, OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import UserError
from ..kinds import ATEN, Activation, classify_aten, fused_kernel, is_graph_candidate, torch_op_label
from ..kinds import axis as neuron_axes
from ..kinds import torch_hard_swish as hard_swish
from ..kinds.fused import NotMeasured


@dataclass
class ActivationCall:
    """One activation applied in the forward pass."""

    index: int  # which candidate call of the pass made it (graph formats name sites by it)
    op: str  # the aten op's overload packet name, or the fused kernel's "namespace.name"
    label: str  # how a report names the op ("aten.clamp")
    activation: Activation
    output: torch.Tensor  # what to measure
    input: torch.Tensor | None  # the activation's data input, when the op is the activation itself
    tag: int | None  # its neuron-axis tag
    origin: Any  # what the mode's `origins` said at the call (the module that made it)
    fused: bool = False
    measured: Any = None  # the output's results, when the mode computed it (`compute_clamp`)


# _facts flags
_CANDIDATE, _FUSED, _SHIFT, _PRODUCT, _MUTABLE, _OBSERVE, _CLAMP, _STANDS_IN = 1, 2, 4, 8, 16, 32, 64, 128
# The ops whose activations are a clamp of their input (relu, relu6, clip): a subclass
# may compute them itself (`compute_clamp`). threshold is not one: it maps -0.0 to 0.0.
CLAMPS = frozenset({"relu", "relu_", "relu6", "relu6_", "clamp", "clamp_", "clamp_min", "clamp_min_", "hardtanh",
                     "hardtanh_"})
# The op an instrumented graph calls after each candidate node (torch_replay.py): the
# mode hands it to `on_observe` and runs nothing.
OBSERVE = ("relu_doctor", "observe")
# The ops an instrumented graph calls in the place of a clamp-kind activation (torch_replay.py):
# the mode hands them to `on_stand_in`.
CLAMP, CLAMP_IN_PLACE = ("relu_doctor", "clamp"), ("relu_doctor", "clamp_")


class ActivationCalls(TorchDispatchMode):
    """Base mode: subclasses implement `on_call` (and may read `unmeasured`)."""

    # Every aten call of the forward pass runs the Python below: keep it lean.

    # Higher-order ops (torch.cond) reach __torch_dispatch__, which runs the branch they
    # take under the mode, so its activations are measured like any others.
    supports_higher_order_operators = True

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch >= 2.9 wraps __torch_dispatch__ of every mode in torch._dynamo.disable unless
        # this says no: the first call then imports torch._dynamo (about a second) and every
        # call pays for the wrapper. Nothing here is ever compiled.
        return False

    def __init__(self, include_smooth: bool, origins: Any = None, track_axes: bool = False) -> None:
        super().__init__()
        self.include_smooth = include_smooth
        self.origins = origins  # .origin(candidate index) -> where the call comes from
        self.track_axes = track_axes
        self._facts: dict[Any, tuple[str, str, int, str, int | None]] = {}
        self.unmeasured: list[str] = []  # warnings: activations that ran but were not measured
        self._unmeasured_seen: set[str] = set()
        self.computes_clamps = False  # whether to ask compute_clamp (a scan under inference mode)
        self.start_pass()

    # ---- the pass --------------------------------------------------------------------------

    def start_pass(self) -> None:
        """Before each forward pass."""
        self.candidates = 0  # candidate calls seen in this pass (graph formats align on it)
        self._op_calls: dict[str, int] = {}  # candidate calls per op in this pass
        self._nth = 0  # which call of its op the current candidate is
        self._tags = TensorMap()
        self._shifted = TensorMap()  # x + 3 -> x
        self._pending: list[tuple[ActivationCall, hard_swish.Pending]] = []

    def finish_pass(self) -> None:
        """After each forward pass: settle what is still waiting."""
        self._settle()

    def on_call(self, call: ActivationCall) -> None:
        raise NotImplementedError

    def on_observe(self, y: torch.Tensor, point: int) -> None:
        """An observe op of an instrumented graph (torch_replay.py) was reached."""

    def on_stand_in(self, in_place: bool, x: torch.Tensor, top: float, point: int) -> Any:
        """A clamp op of an instrumented graph (torch_replay.py) was reached: run what it stands for."""
        raise NotImplementedError

    def compute_clamp(self, x: torch.Tensor, top: float, in_place: bool,
                      axis: int | None = None) -> tuple[torch.Tensor, Any] | None:
        """Compute clamp(x, 0, top) (in place: into x) and measure it in the same pass:
        (the output, its results for `ActivationCall.measured`), or None to let torch run
        the op. Only for subclasses that set `computes_clamps`. `axis`: x's neuron axis,
        where the mode does not follow it."""
        return None

    # ---- dispatch ------------------------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if type(func) is not OpOverload and isinstance(func, HigherOrderOperator):
            return self._higher_order(func, args, kwargs)
        facts = self._facts.get(func)
        if facts is None:
            facts = self._facts[func] = _op_facts(func)
        op, qualified, flags, role, tag = facts
        if flags & _OBSERVE:
            self.on_observe(*args)
            return None
        if flags & _STANDS_IN:
            return self.on_stand_in(flags & _MUTABLE != 0, *args)
        if self._pending and flags & _MUTABLE and not flags & _PRODUCT:
            self._settle_touched(args)  # an in-place op may change a waiting relu6's output
        computed = self._clamp(op, args, kwargs) if flags & _CLAMP and self.computes_clamps else None
        if computed is not None:
            out = computed[0]
        else:
            try:
                out = func(*args, **kwargs)
            except RuntimeError as refused:
                rewrapped = _numbers_as_tensors(func, args) if "Expected a value of type" in str(refused) else None
                if rewrapped is None:
                    raise
                out = func(*rewrapped, **kwargs)
        if self.track_axes:
            self._follow(op, role, tag, args, out)
        if flags & _SHIFT:
            x = hard_swish.shifted_input(op, args, kwargs)
            if x is not None and isinstance(out, torch.Tensor):
                self._shifted[out] = x
        elif flags & _PRODUCT and self._pending:
            self._step_pending(op, args, out)
        if flags & _CANDIDATE:
            index = self.candidates
            self.candidates += 1
            self._nth = self._op_calls.get(qualified, 0)
            self._op_calls[qualified] = self._nth + 1
            self._settle()  # sites stay in execution order
            if flags & _FUSED:
                self._fused(index, op, qualified, args, kwargs, out)
            elif computed is not None:
                self._activation(index, op, args, kwargs, out, *computed[1:])
            else:
                self._activation(index, op, args, kwargs, out)
        return out

    def _clamp(self, op: str, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Activation, Any] | None:
        """(output, activation, results) where `compute_clamp` computes this call."""
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None or x.dtype not in (torch.float32, torch.float64) or not torch.is_inference_mode_enabled():
            return None
        activation = classify_aten(op, args, kwargs, self.include_smooth)
        top = clamp_top(activation)
        if top is None or activation is None:
            return None
        if activation.kind == hard_swish.RELU6 and self._shifted.get(x) is not None:
            return None  # a relu6 of x + 3, maybe a hard-swish's: measured (or not) when settled
        computed = self.compute_clamp(x, top, in_place=op.endswith("_"))
        return None if computed is None else (computed[0], activation, computed[1])

    def _activation(self, index: int, op: str, args: tuple, kwargs: dict, out: Any,
                    activation: Activation | None = None, measured: Any = None) -> None:
        activation = activation or classify_aten(op, args, kwargs, self.include_smooth)
        if activation is None or not (isinstance(out, torch.Tensor) and out.is_floating_point()):
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        call = ActivationCall(index, op, torch_op_label(op), activation, out, x, self._tags.get(out),
                              self._origin(index, qualified_name(op)), measured=measured)
        shifted = self._shifted.get(x) if activation.kind == hard_swish.RELU6 and x is not None else None
        if shifted is not None:
            self._pending.append((call, hard_swish.Pending(shifted, out)))
            return
        self.on_call(call)

    def _fused(self, index: int, op: str, qualified: str, args: tuple, kwargs: dict, out: Any) -> None:
        kernel = fused_kernel(*qualified.split(".", 1))
        assert kernel is not None
        origin = self._origin(index, qualified)
        try:
            assert kernel.measure is not None
            found = kernel.measure(args, kwargs, out, self.include_smooth)
        except NotMeasured as reason:
            self._not_measured(qualified, kernel.holds, str(reason), origin)
            return
        first = next(iter(_tensors_in(args)), None)
        for activation, y, tag in found:
            if not (isinstance(y, torch.Tensor) and y.is_floating_point()):
                self._not_measured(qualified, kernel.holds, "its non-float values", origin)
                continue
            if tag is None and first is not None:
                tag = self._tags.get(first)
            self.on_call(ActivationCall(index, qualified, f"{qualified}", activation, y, None, tag, origin, True))

    def _higher_order(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """torch.cond: the branch its predicate picks, run with this mode on. A higher-order op
        without a subgraph (with_effects around a print) runs as it is; others (while_loop,
        map, scan ...) hide calls in ways not measured yet: refused, never half measured."""
        if func.name() == "cond" and not kwargs and len(args) == 4:
            predicate, if_true, if_false, operands = args
            with self:
                return (if_true if bool(predicate) else if_false)(*operands)
        if not any(isinstance(a, (torch.nn.Module, FunctionType)) for a in (*args, *kwargs.values())):
            return func(*args, **kwargs)
        raise UserError(f"the model calls torch's higher-order op {func.name()}, whose activations relu-doctor "
                        "cannot measure yet", "Scan a version of the model without it (torch.cond is supported).")

    def _not_measured(self, qualified: str, holds: str, reason: str, origin: Any) -> None:
        where = getattr(origin, "path", "") or "the model"
        key = f"{where}:{qualified}"
        if key in self._unmeasured_seen:
            return
        self._unmeasured_seen.add(key)
        self.unmeasured.append(f"{qualified} in {where} applies {holds}, but {reason} cannot be measured: "
                               "its activations are not in this report")

    def _origin(self, index: int, qualified: str) -> Any:
        """Where the call comes from, read when it runs (a call may be reported later)."""
        return self.origins.origin(index, qualified, self._nth) if self.origins is not None else None

    # ---- hand-written hard-swish ------------------------------------------------------------

    def _step_pending(self, op: str, args: tuple, out: Any) -> None:
        for _, pending in self._pending:
            if pending.step(op, args):
                pending.advance(op, args, out)
                return

    def _settle_touched(self, args: tuple) -> None:
        touched = {id(t) for t in _tensors_in(args)}
        if any(id(p.current) in touched or id(c.output) in touched for c, p in self._pending):
            self._settle()

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for call, p in pending:
            outcome = p.outcome()
            if outcome == hard_swish.RELU6:
                self.on_call(call)
            elif outcome == hard_swish.HARD_SWISH and self.include_smooth:
                self.on_call(ActivationCall(call.index, call.op, call.label, Activation("hardswish", {}), p.final,
                                            None, self._tags.get(p.final), call.origin))

    # ---- neuron axis ------------------------------------------------------------------------------

    def _follow(self, op: str, role: str, tag: int | None, args: tuple, out: Any) -> None:
        tags = self._tags
        if role == neuron_axes.FOLLOWER:
            for a in _tensors_in(args):
                tag = tags.get(a)
                if tag is not None:
                    if isinstance(out, torch.Tensor):
                        tags[out] = neuron_axes.broadcast(tag, a.dim(), out.dim())
                        return
                    break
            else:
                return
        elif role == neuron_axes.LAYOUT:
            source = args[0] if args and isinstance(args[0], torch.Tensor) else None
            tag = tags.get(source) if source is not None else None
            if tag is None or source is None or not isinstance(out, torch.Tensor):
                if isinstance(out, torch.Tensor):
                    del tags[out]  # an in-place layout op (transpose_) moved the axis away
                return
            tag = neuron_axes.torch_layout(op, tag, args, tuple(source.shape), tuple(out.shape))
            if tag is None:
                del tags[out]
                return
        if tag is None:
            return
        for t in _tensors_in(out):
            tags[t] = tag


class TensorMap:
    """Values keyed by tensors, for one forward pass: a key is the tensor itself (identity),
    and a key keeps no tensor alive, as torch's WeakTensorKeyDictionary. That one builds a
    Python WeakIdRef object for every lookup; here a lookup is a dict get and a call of the
    C weakref kept beside the value. Every aten call of a pass looks up its inputs' neuron
    axes, and after a memory-bound op that Python runs from cold caches: on MobileNetV2
    (batch 32, 224x224, one thread) the axis tracking took 4.5 ms per forward pass with
    WeakTensorKeyDictionary, 3.7 with this (benchmarks/README.md, "The capture alone").

    An entry whose tensor died stays until its id is set again or the pass ends (a new
    TensorMap each pass); it never matches: a dead weakref gives None, and a live tensor
    with a reused id is not the dead one."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, t: torch.Tensor, default: Any = None) -> Any:
        item = self._items.get(id(t))
        return item[1] if item is not None and item[0]() is t else default

    def __setitem__(self, t: torch.Tensor, value: Any) -> None:
        self._items[id(t)] = (weakref.ref(t), value)

    def __contains__(self, t: torch.Tensor) -> bool:
        item = self._items.get(id(t))
        return item is not None and item[0]() is t

    def __delitem__(self, t: torch.Tensor) -> None:
        self._items.pop(id(t), None)

    def __len__(self) -> int:
        return sum(1 for ref, _ in self._items.values() if ref() is not None)


def clamp_top(activation: Activation | None) -> float | None:
    """The top of clamp(x, 0, top) where a clamp op's activation is a relu, relu6 or clip
    (from the ops in CLAMPS, those kinds come with a lower bound of 0 only); else None."""
    if activation is None or activation.kind not in ("relu", "relu6", "clip"):
        return None
    return {"relu": float("inf"), "relu6": 6.0}.get(activation.kind) or float(activation.params["max"])


def qualified_name(aten_op: str) -> str:
    return f"{ATEN}.{aten_op}"


def _op_facts(func: Any) -> tuple[str, str, int, str, int | None]:
    """(overload packet name, "namespace.name", flags, neuron-axis role, producer tag)."""
    packet = func._overloadpacket
    op = packet.__name__
    namespace = getattr(func, "namespace", ATEN)
    qualified = f"{namespace}.{op}"
    if (namespace, op) == OBSERVE:
        return op, qualified, _OBSERVE, neuron_axes.FOLLOWER, None
    if (namespace, op) in (CLAMP, CLAMP_IN_PLACE):
        return op, qualified, _STANDS_IN | (_MUTABLE if op.endswith("_") else 0), neuron_axes.FOLLOWER, None
    # the default overloads only: an out= variant writes a buffer of the caller's
    flags = _CLAMP if namespace == ATEN and op in CLAMPS and func._overloadname == "default" else 0
    if is_graph_candidate(namespace, op):
        flags |= _CANDIDATE
        if fused_kernel(namespace, op) is not None:
            flags |= _FUSED
    if namespace == ATEN and op in hard_swish.ADDS:
        flags |= _SHIFT
    if namespace == ATEN and op in hard_swish.PRODUCTS:
        flags |= _PRODUCT
    if func._schema.is_mutable:
        flags |= _MUTABLE
    role, tag = neuron_axes.torch_role(op) if namespace == ATEN else (neuron_axes.FOLLOWER, None)
    return op, qualified, flags, role, tag


def _numbers_as_tensors(func: Any, args: tuple) -> tuple | None:
    """`args` with Python numbers that stand for tensor arguments made tensors again; None
    when there are none. When TorchScript first optimizes a graph under the mode, it pools
    equal tensor constants by calling aten::equal on them, and the mode receives a
    one-element constant ({6}, from a trace of `x / 6`) as the number 6.0, which the op then
    refuses before it runs. Rare, so only after such a refusal: the hot path stays one call."""
    numbers = {bool: torch.bool, int: torch.int64, float: torch.float64}
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    rewrapped, changed = list(args), False
    for i, (value, argument) in enumerate(zip(args, func._schema.arguments)):
        if type(value) in numbers and isinstance(argument.type, torch.TensorType):
            rewrapped[i] = torch.tensor(value, dtype=numbers[type(value)], device=device)
            changed = True
    return tuple(rewrapped) if changed else None


def _tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in aten arguments or outputs, however nested (an op may return an int,
    a float, None, or lists of tensors)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v)
