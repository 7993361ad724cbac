"""SiLU written out: x * Sigmoid(x) (exporters' form of nn.SiLU / swish)."""

from __future__ import annotations

from typing import Any

from ..base import Activation
from . import GraphView, PatternMatch
from .helpers import gated_product


class Silu:
    ops = frozenset({"Sigmoid"})

    def match(self, view: GraphView, node: Any, include_smooth: bool) -> PatternMatch | None:
        mul = gated_product(view, node)
        if mul is None:
            return None  # a plain sigmoid: no activation of ours
        return PatternMatch(Activation("silu", {}) if include_smooth else None, mul, node.input[0])
