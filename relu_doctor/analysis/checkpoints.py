"""A timeline of checkpoints: scan each on the same data, in training order.

The order is the step (or epoch) stored in the checkpoint when every file has one
(Lightning's `global_step`, a `step` / `epoch` key), else the number in each file name
(`ckpt-1200.pt`, `epoch=3.ckpt`) when every name has one, else the order given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..report import Report
from .timeline import Timeline, build_timeline, check_new_dead

_STEP_KEYS = ("global_step", "step", "epoch")
_NUMBER = re.compile(r"(\d+)")


def stored_step(path: Path) -> int | None:
    """The step a checkpoint dict records, read with weights_only (no code runs), or None."""
    import zipfile

    from ..loading import STATE_DICT, detect_format

    try:  # only torch.save archives store a step; TorchScript, .pt2, ONNX do not
        if not zipfile.is_zipfile(path) or detect_format(path) != STATE_DICT:
            return None
    except UserError:
        return None  # the scan of this file will say what is wrong with it
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a plain checkpoint (TorchScript, .pt2, a pickle): no stored step
        return None
    if isinstance(obj, dict):
        for key in _STEP_KEYS:
            value = obj.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def name_number(path: Path) -> int | None:
    """The last number in the file name (without its extension), or None."""
    numbers = _NUMBER.findall(path.name.split(".")[0] if path.name.count(".") else path.name)
    numbers = numbers or _NUMBER.findall(path.stem)
    return int(numbers[-1]) if numbers else None


def ordered(paths: Sequence[Path]) -> tuple[list[tuple[int, Path]], str]:
    """(step, path) in training order, and which rule ordered them."""
    stored = [stored_step(p) for p in paths]
    if all(s is not None for s in stored):
        return sorted(zip(stored, paths), key=lambda t: t[0]), "stored step"  # type: ignore[arg-type,return-value]
    named = [name_number(p) for p in paths]
    if all(n is not None for n in named):
        return sorted(zip(named, paths), key=lambda t: t[0]), "number in the file name"  # type: ignore[arg-type,return-value]
    return list(enumerate(paths)), "order given"


def from_checkpoints(paths: Sequence[str | Path], fail_new_dead: float | None = None,
                     progress: Callable[[str], None] | None = None, **scan_options: Any) -> Timeline:
    """Scan every checkpoint with the same options (the same data) and build the timeline."""
    from ..api import scan

    check_new_dead(fail_new_dead)
    files = [Path(p) for p in paths]
    for f in files:
        if not f.is_file():
            raise UserError(f"checkpoint not found: {f}" if not f.exists() else f"{f} is not a file")
    if len({f.resolve() for f in files}) != len(files):
        raise UserError("the same checkpoint is given twice")
    steps, rule = ordered(files)
    if len({s for s, _ in steps}) != len(steps) and rule != "order given":
        steps, rule = list(enumerate(files)), "order given"
    points: list[tuple[int, str, Report]] = []
    warnings: list[str] = []
    for step, path in steps:
        if progress:
            progress(str(path))
        report = scan(path, **scan_options)
        warnings.extend(w for w in report.warnings if w not in warnings)
        points.append((step, path.name, report))
    warnings.append(f"checkpoints ordered by {rule}")
    return build_timeline(points, "checkpoints", fail_new_dead, warnings)
