"""The sample options as the user writes them: --input-shape, --shard and --input-range
parsed (a UserError with an example for a bad one), and --input-shape applied to the
model's input specs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .errors import UserError
from .inputs import InputSpec


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """'3,224,224' or 'name=3,224,224' -> (name or None, shape)."""
    name, _, dims = text.rpartition("=") if "=" in text else ("", "", text)
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise UserError(f"--input-shape {text!r} is not a shape",
                        "Write it like 3,224,224 or input=3,224,224.") from None
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape {text!r} has a zero or negative dimension", "Every dimension must be >= 1.")
    return (name or None), shape


def parse_shard(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """'2/3' (or the API's (2, 3)) -> (2, 3): shard 2 of 3, counted from 0."""
    if text is None:
        return None
    index, count = _pair(text, "/", int, "--shard", "I/N", "Write it like 0/4 (shard 0 of 4, counted from 0).")
    if not 0 <= index < count:
        raise UserError(f"--shard {text!r}: I must be in 0..N-1", "Shards are counted from 0: 0/4 ... 3/4.")
    return index, count


def parse_range(text: str | Sequence[float] | None) -> tuple[float, float] | None:
    """'0,1' (or the API's (0, 1)) -> (0.0, 1.0)."""
    if text is None:
        return None
    lo, hi = _pair(text, ",", float, "--input-range", "LO,HI", "Write it like 0,1.")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"--input-range {text!r}: LO and HI must be finite numbers", "Write it like 0,1.")
    if not lo < hi:
        raise UserError(f"--input-range {text!r}: LO must be below HI")
    return lo, hi


def _pair(text: str | Sequence[Any], sep: str, kind: type, flag: str, form: str, hint: str) -> tuple[Any, Any]:
    """Two numbers of `kind` from 'A<sep>B', or from the API's pair of numbers (no strings or
    bools there, and for int no fractions)."""
    try:
        parts = text.split(sep) if isinstance(text, str) else list(text)
        if not isinstance(text, str) and any(isinstance(v, (bool, str)) or (kind is int and int(v) != v)
                                             for v in parts):
            raise ValueError
        first, second = (kind(v) for v in parts)
    except (ValueError, TypeError):
        raise UserError(f"{flag} {text!r} is not {form}", hint) from None
    return first, second


def resolve_specs(
    model_specs: Sequence[InputSpec], input_shapes: Sequence[str] | dict | tuple | None
) -> list[InputSpec]:
    """Fill the model's input specs with --input-shape values (positional or by name)."""
    overrides = _shape_overrides(input_shapes)
    specs = list(model_specs)  # new specs replace entries of this copy; the caller's are not changed
    if not specs:  # an eager module says nothing about its inputs: one per given shape
        specs = [InputSpec(name or f"input{i}") for i, (name, _) in enumerate(overrides)]
    position = {s.name: i for i, s in enumerate(specs)}
    for i, (name, shape) in enumerate(overrides):
        if name is not None:
            if name not in position:
                raise UserError(f"--input-shape names {name!r}, but the model's inputs are "
                                f"{', '.join(position)}")
            i = position[name]
        elif i >= len(specs):
            raise UserError(f"--input-shape given {len(overrides)} times, but the model has {len(specs)} inputs")
        specs[i] = replace(specs[i], shape=shape)
    return specs


def _shape_overrides(input_shapes: Sequence[str] | dict | tuple | None) -> list[tuple[str | None, tuple[int, ...]]]:
    if input_shapes is None:
        return []
    if isinstance(input_shapes, dict):
        return [(str(name), _dims(shape)) for name, shape in input_shapes.items()]
    if isinstance(input_shapes, tuple) and all(isinstance(d, int) for d in input_shapes):
        return [(None, _dims(input_shapes))]
    if isinstance(input_shapes, str):
        return [parse_shape(input_shapes)]
    if not isinstance(input_shapes, (list, tuple)):
        raise UserError(f"input_shape={input_shapes!r} is not a shape",
                        "Give '3,224,224', a tuple of dims, a list of those, or {input name: shape}.")
    return [parse_shape(s) if isinstance(s, str) else (None, _dims(s)) for s in input_shapes]


def _dims(shape: Any) -> tuple[int, ...]:
    """A shape given as numbers (the API's tuples), each a whole number >= 1."""
    if isinstance(shape, str):
        return parse_shape(shape)[1]
    try:
        dims = tuple(shape)
    except TypeError:
        raise UserError(f"input shape {shape!r} is not a sequence of dims", "Write it like (3, 224, 224).") from None
    if not dims or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims):
        raise UserError(f"input shape {shape!r}: every dimension must be a whole number >= 1",
                        "Write it like (3, 224, 224).")
    return tuple(int(d) for d in dims)
