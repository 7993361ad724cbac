"""Hand-written hard-swish in torch: x * relu6(x + 3) / 6 (either order), and the
hard-sigmoid relu6(x + 3) / 6. The same rule as ONNX (onnx_patterns/hard_swish.py),
so every format agrees: the relu6 inside one is that smooth activation, not a relu6
site; a hard-swish is a site only with --include-smooth (measured at its last op), a
hard-sigmoid never; relu6(x + 3) not divided by 6 stays a relu6 site.

The torch backends see one aten call at a time, so a relu6 of x + 3 waits (`Pending`)
until the calls that follow it settle what it is: `step` follows each multiply /
divide, `outcome` says what it became when the wait ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SHIFT, SCALE = 3.0, 6.0
ADDS = frozenset({"add", "add_"})
PRODUCTS = frozenset({"mul", "mul_", "div", "div_"})
RELU6, HARD_SIGMOID, HARD_SWISH = "relu6", "hard_sigmoid", "hard_swish"


def _is_number(value: Any, target: float) -> bool:
    """A Python number, or a one-element tensor (a traced constant), equal to `target`."""
    if isinstance(value, bool):
        return False
    if not isinstance(value, (int, float)):
        if not hasattr(value, "numel") or value.numel() != 1 or value.is_complex():
            return False
        value = float(value)
    return abs(float(value) - target) < 1e-6


def shifted_input(op: str, args: tuple, kwargs: dict) -> Any:
    """x when the call computes x + 3 (or 3 + x), else None (args: tensors, or fx nodes)."""
    if op not in ADDS or len(args) < 2 or kwargs.get("alpha", 1) != 1:
        return None
    a, b = args[0], args[1]
    if _is_number(b, SHIFT) and not isinstance(a, (int, float)):
        return a
    if _is_number(a, SHIFT) and not isinstance(b, (int, float)):
        return b
    return None


@dataclass
class Pending:
    """A relu6 of x + 3, waiting to learn whether it is a hard-sigmoid / hard-swish."""

    x: Any  # the tensor shifted by 3
    current: Any  # the latest tensor of the pattern
    stage: str = "clip"  # clip -> mul (by x) / div (by 6) -> done
    final: Any = None  # the hard-swish's output, once complete

    def step(self, op: str, args: tuple) -> bool:
        """Advance on a multiply / divide of the pattern's current tensor; True if it moved."""
        if self.stage == "done" or len(args) < 2:
            return False
        a, b = args[0], args[1]
        if a is not self.current and b is not self.current:
            return False
        other = b if a is self.current else a
        divides = (op.startswith("div") and a is self.current and _is_number(other, SCALE)) or \
            (op.startswith("mul") and _is_number(other, 1 / SCALE))
        times_x = op.startswith("mul") and other is self.x
        wanted = {"clip": divides or times_x, "mul": divides, "div": times_x}
        return wanted[self.stage]

    def advance(self, op: str, args: tuple, out: Any) -> None:
        """Take the call that `step` accepted."""
        other = args[1] if args[0] is self.current else args[0]
        by_x = op.startswith("mul") and other is self.x
        if self.stage == "clip":
            self.stage = "mul" if by_x else "div"
            self.current = out
        elif (self.stage == "mul" and not by_x) or (self.stage == "div" and by_x):
            self.stage, self.final, self.current = "done", out, out

    def outcome(self) -> str:
        """What it is when the wait ends: a relu6 site, a hard-sigmoid, or a hard-swish."""
        if self.stage == "done":
            return HARD_SWISH
        return HARD_SIGMOID if self.stage == "div" else RELU6


def graph_outcome(node: Any) -> str:
    """The same rule on a torch.export / fx graph: what the relu6 call `node` is, read
    from its input's producer and the calls that use it."""
    source: Any = node.args[0] if node.args else None
    packet = getattr(getattr(source, "target", None), "_overloadpacket", None)
    if source is None or packet is None:
        return RELU6
    x = shifted_input(packet.__name__, tuple(source.args), dict(source.kwargs))
    if x is None:
        return RELU6
    pending = Pending(x, node)
    for _ in range(2):
        for user in pending.current.users:
            op = getattr(getattr(user.target, "_overloadpacket", None), "__name__", None)
            if user.op == "call_function" and op in PRODUCTS and pending.step(op, tuple(user.args)):
                pending.advance(op, tuple(user.args), user)
                break
        else:
            break
    return pending.outcome()
