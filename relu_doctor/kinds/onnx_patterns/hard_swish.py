"""Hard-swish and hard-sigmoid written out, as exporters emit them for MobileNetV3-style
models: x * Clip(x + 3, 0, 6) / 6 (either order), Clip(x + 3, 0, 6) / 6, x * HardSigmoid(x).

The Clip(0, 6) inside one is that smooth activation, not a relu6 site (SPEC 3): a
hard-swish is a site only with --include-smooth (measured at its last node), a
hard-sigmoid never.
"""

from __future__ import annotations

from typing import Any

from onnx import helper

from ..base import Activation
from ..classifiers import ABSENT
from ..registry import classify_onnx
from . import GraphView, PatternMatch
from .helpers import gated_product, is_value, other_input

SHIFT, SCALE = 3.0, 6.0


class HardSwish:
    ops = frozenset({"Clip", "HardSigmoid"})

    def match(self, view: GraphView, node: Any, include_smooth: bool) -> PatternMatch | None:
        if node.op_type == "HardSigmoid":
            mul = gated_product(view, node)
            if mul is None:
                return None
            return PatternMatch(Activation("hardswish", {}) if include_smooth else None, mul, node.input[0])
        if not self._is_relu6(view, node):
            return None
        x = _shifted_input(view, node)
        if x is None or not _is_hard_sigmoid_clip(view, node, x):
            return None
        end = _hard_swish_end(view, node, x)
        if end is not None and include_smooth:
            return PatternMatch(Activation("hardswish", {}), end, x)
        return PatternMatch(None, node, x)

    @staticmethod
    def _is_relu6(view: GraphView, node: Any) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        found = classify_onnx(node.op_type, attrs, [view.constant(n) if n else ABSENT for n in node.input])
        return found is not None and found.kind == "relu6"


def _is_div_by_scale(view: GraphView, node: Any, name: str) -> bool:
    """node computes name / 6 (or name * 1/6)."""
    if node is None or len(node.input) != 2:
        return False
    if node.op_type == "Div" and node.input[0] == name:
        return is_value(view.constant(node.input[1]), SCALE)
    if node.op_type == "Mul":
        other = other_input(node, name)
        return other is not None and is_value(view.constant(other), 1 / SCALE)
    return False


def _shifted_input(view: GraphView, node: Any) -> str | None:
    """x when this node's data input is x + 3, else None."""
    add = view.producer(node.input[0]) if node.input else None
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    for a, b in (add.input, reversed(add.input)):
        if is_value(view.constant(b), SHIFT) and view.constant(a) is None:
            return str(a)
    return None


def _is_hard_sigmoid_clip(view: GraphView, clip: Any, x: str) -> bool:
    """Clip(x + 3, 0, 6) followed by / 6, directly or after a product with x."""
    y = clip.output[0]
    after = view.only_consumer(y)
    if _is_div_by_scale(view, after, y):
        return True
    if after is not None and after.op_type == "Mul" and other_input(after, y) == x:
        return _is_div_by_scale(view, view.only_consumer(after.output[0]), after.output[0])
    return False


def _hard_swish_end(view: GraphView, clip: Any, x: str) -> Any:
    """The last node of x * Clip(x + 3, 0, 6) / 6 (either order), None for a hard-sigmoid."""
    first = view.only_consumer(clip.output[0])
    if first is None:
        return None
    second = view.only_consumer(first.output[0])
    if first.op_type == "Mul" and other_input(first, clip.output[0]) == x:
        return second  # (x * clip) / 6
    if second is not None and second.op_type == "Mul" and other_input(second, first.output[0]) == x:
        return second  # x * (clip / 6)
    return None
