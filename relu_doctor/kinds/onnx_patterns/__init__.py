"""ONNX activations written as several nodes: one file per pattern, one matcher interface.

A pattern starts at one node type (`Pattern.ops`) and reads the graph around it through
a `GraphView`. `match` answers None when the node is not its pattern (then the node is
classified on its own by the records), or a `PatternMatch`: the activation (None when
the node is part of a smooth activation that is not reported, e.g. the Clip inside a
hard-swish without --include-smooth), the node whose output is measured, and the
activation's data input (what a leak reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..base import Activation


class GraphView(Protocol):
    """What a pattern may ask about the graph around a node."""

    def constant(self, name: str) -> Any:
        """The value of a constant tensor (a numpy array), None if computed at run time."""

    def producer(self, name: str) -> Any:
        """The node that produces `name` (an onnx NodeProto), or None."""

    def only_consumer(self, name: str) -> Any:
        """The single node reading `name` (None when several read it, or it is a graph output)."""


@dataclass(frozen=True)
class PatternMatch:
    activation: Activation | None  # None: not a site (part of an activation that is not reported)
    measured: Any  # the NodeProto whose first output is the activation's output
    data_input: str  # the tensor the activation reads


class Pattern(Protocol):
    ops: frozenset[str]  # node types the pattern is found from

    def match(self, view: GraphView, node: Any, include_smooth: bool) -> PatternMatch | None: ...


def _patterns() -> tuple[Pattern, ...]:
    from .hard_swish import HardSwish
    from .max_zero import MaxZero
    from .silu import Silu

    return (HardSwish(), MaxZero(), Silu())


PATTERNS: tuple[Pattern, ...] = _patterns()
PATTERN_OPS = frozenset(op for p in PATTERNS for op in p.ops)


def match_pattern(view: GraphView, node: Any, include_smooth: bool) -> PatternMatch | None:
    """The first pattern that claims `node`, or None."""
    for pattern in PATTERNS:
        if node.op_type in pattern.ops:
            found = pattern.match(view, node, include_smooth)
            if found is not None:
                return found
    return None
