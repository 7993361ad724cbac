"""Boxes [lo, hi] of float64 tensors: what the torch interval analysis keeps beside a tensor.

A box holds every value its tensor can take for any input in the range. Boxes are
clamped to +-BIG and widened after each rounding step (`widen`), so they stay sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .proof import BIG


@dataclass
class Box:
    lo: torch.Tensor  # float64, the tensor's shape
    hi: torch.Tensor
    # why some channels are constant: (axis, mask along it, rule); kept through bias adds,
    # copies and views that keep the shape, so the site can name the rule that proves it
    why: tuple[int, torch.Tensor, str] | None = None



def f64(t: Any) -> torch.Tensor:
    return t.detach().to(torch.float64) if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


def clamped(box: Box) -> Box:
    lo = torch.nan_to_num(box.lo, nan=-BIG, posinf=BIG, neginf=-BIG).clamp(-BIG, BIG)
    hi = torch.nan_to_num(box.hi, nan=BIG, posinf=BIG, neginf=-BIG).clamp(-BIG, BIG)
    return Box(lo, hi, box.why)


def widen(box: Box, rel: float = 0.0, absolute: torch.Tensor | float = 0.0) -> Box:
    lo = box.lo - rel * box.lo.abs() - absolute
    hi = box.hi + rel * box.hi.abs() + absolute
    return clamped(Box(lo, hi, box.why))
