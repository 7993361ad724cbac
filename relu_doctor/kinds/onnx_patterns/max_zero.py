"""ReLU written as Max(x, 0), the zero in either place."""

from __future__ import annotations

from typing import Any

from ..base import Activation
from ..classifiers import is_zero, onnx_scalar
from . import GraphView, PatternMatch


class MaxZero:
    ops = frozenset({"Max"})

    def match(self, view: GraphView, node: Any, include_smooth: bool) -> PatternMatch | None:
        """Exactly one computed input and one constant single zero."""
        if len(node.input) != 2 or not all(node.input):
            return None
        values = [view.constant(name) for name in node.input]
        computed = [name for name, v in zip(node.input, values) if v is None]
        consts = [onnx_scalar(v) for v in values if v is not None]
        if len(computed) == 1 and len(consts) == 1 and is_zero(consts[0]):
            return PatternMatch(Activation("relu", {}), node, computed[0])
        return None
