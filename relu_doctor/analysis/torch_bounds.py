"""Interval bounds through a torch model, computed while it runs (eager, TorchScript, .pt2).

The model runs once on a batch of one (the middle of the input range) under a
TorchDispatchMode that keeps, beside every tensor computed from the input, a float64
box [lo, hi] holding every value that tensor can take for any input in the range. Each
aten call gets the box its rule gives (torch_box_rules.py); an op without a rule makes
its outputs unbounded (never wrong, only less useful). Running the model, rather than
walking a graph, means the site names come from the scan's own naming (the same
origins, the same order), for modules, TorchScript and torch.export programs alike.

A tensor that is not in the table was not computed from the input: a parameter, a
buffer or a constant, used as a point. Random ops and in-place writes through aliases
make their results unbounded, so a stale box is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from ..backends.torch_calls import ActivationCall, ActivationCalls
from .proof import TOP
from .torch_box_rules import BoxRules
from .torch_boxes import Box


@dataclass
class SiteBounds:
    name: str
    kind: str
    out: Box | None  # the activation's output box (None: unbounded)
    why: tuple[int, torch.Tensor, str] | None  # from the activation's input
    shape: list[int]


class IntervalMode(ActivationCalls):
    """Runs the model while propagating boxes; records the boxes of every activation site.

    The base mode (the scan's own) finds and orders the activation calls; this one adds
    the boxes."""

    def __init__(self, origins: Any, include_smooth: bool, u: float) -> None:
        self.boxes: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # tensor -> Box | TOP
        self.sites: list[SiteBounds] = []
        self.lost: dict[str, int] = {}  # ops without a rule that made bounds unbounded
        self.rules = BoxRules(self.boxes, u)  # the per-op rules, reading the same table
        self._counts: dict[str, int] = {}
        self._waiting: list[ActivationCall] = []
        super().__init__(include_smooth, origins)

    # -- the table ---------------------------------------------------------------------

    def seed(self, t: torch.Tensor, lo: float, hi: float) -> None:
        self.boxes[t] = Box(torch.full(t.shape, lo, dtype=torch.float64), torch.full(t.shape, hi, dtype=torch.float64))

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        first = self.rules.box(args[0]) if args else None  # the activation input's box, before an in-place write
        out = super().__torch_dispatch__(func, types, args, kwargs)  # runs func; reports activations to on_call
        op = func._overloadpacket.__name__
        base = op[:-1] if op.endswith("_") and not op.startswith("_") else op
        leaves = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        tracked = any(t in self.boxes for t in leaves)
        random = torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()) and not _eval_rrelu(base, args, kwargs)
        result: Any = TOP
        if tracked and not random:
            try:
                result = self.rules.apply(base, func, args, kwargs, out)
            except Exception:  # a rule that cannot handle these arguments: unbounded, never wrong
                result = TOP
            if result is TOP:
                self.lost[op] = self.lost.get(op, 0) + 1
        if tracked or random:
            self._store(func, args, out, result)
        self._record_waiting(first if isinstance(first, Box) else None)
        return out

    def on_call(self, call: ActivationCall) -> None:
        """An activation site ran (named as the scan names it); its box is read once its op is done."""
        self._waiting.append(call)

    def flush(self) -> None:
        """After the forward pass: settle what the base mode still holds, record it."""
        self.finish_pass()
        self._record_waiting(None)

    def _record_waiting(self, first: Box | None) -> None:
        from ..backends.torch_naming import site_name

        for call in self._waiting:
            box = self.boxes.get(call.output) if call.output in self.boxes else TOP
            x = first if call.input is not None else None
            name = site_name(call.origin, call.activation.kind, self._counts)
            self.sites.append(SiteBounds(name, call.activation.kind, box if isinstance(box, Box) else None,
                                         x.why if x is not None else None, list(call.output.shape[1:])))
        self._waiting.clear()

    def _store(self, func: Any, args: tuple, out: Any, result: Any) -> None:
        written = [a for a, s in zip(args, func._schema.arguments)
                   if s.alias_info is not None and s.alias_info.is_write and isinstance(a, torch.Tensor)]
        for t in written:  # an in-place write: every other view of that memory is stale now
            self._forget_aliases(t)
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        boxes = result if isinstance(result, list) else [result] * len(outs)
        if len(boxes) != len(outs):
            boxes = [TOP] * len(outs)
        for o, b in zip(outs, boxes):
            if b is not TOP and (tuple(b.lo.shape) != tuple(o.shape) or not o.is_floating_point()):
                b = TOP
            self.boxes[o] = b
        for t in written:
            if not any(t is o for o in outs):
                self.boxes[t] = boxes[0] if len(outs) == 1 else TOP

    def _forget_aliases(self, t: torch.Tensor) -> None:
        ptr = t.untyped_storage().data_ptr()
        for other in list(self.boxes.keys()):
            if other is not t and other.untyped_storage().data_ptr() == ptr:
                self.boxes[other] = TOP


def _eval_rrelu(op: str, args: tuple, kwargs: dict) -> bool:
    """rrelu is tagged random, but in eval it is a leaky ReLU of slope (lower + upper) / 2."""
    return op == "rrelu" and not (args[3] if len(args) > 3 else kwargs.get("training", False))

