"""Small graph questions the patterns share."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import GraphView


def is_value(value: Any, target: float) -> bool:
    """A constant holding the single number `target`."""
    return value is not None and np.size(value) == 1 and abs(float(np.reshape(value, -1)[0]) - target) < 1e-6


def other_input(node: Any, name: str) -> str | None:
    """The other input of a two-input node that reads `name` once."""
    others = [i for i in node.input if i != name]
    return others[0] if len(node.input) == 2 and len(others) == 1 else None


def gated_product(view: GraphView, gate: Any) -> Any:
    """The Mul of x * gate(x) that this gate node feeds, if any."""
    if not gate.input or not gate.output:
        return None
    mul = view.only_consumer(gate.output[0])
    if mul is not None and mul.op_type == "Mul" and other_input(mul, gate.output[0]) == gate.input[0]:
        return mul
    return None
