"""--device: the one parser of its spelling (auto, cpu, cuda, cuda:N), shared by the CLI and both backends.

Whether the device exists is each backend's question (torch counts CUDA devices,
onnxruntime lists its providers); the spelling is settled here, without importing either.
"""

from __future__ import annotations

import re

from .errors import UserError

_DEVICE = re.compile(r"auto|cpu|cuda(:(\d{1,4}))?")


def parse_device(text: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1); 'cpu' -> ('cpu', None). Anything else is a user error."""
    match = _DEVICE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"unknown --device {text!r}", "Use cpu, cuda, cuda:N (N counted from 0) or auto.")
    kind = text.strip().split(":")[0]
    return kind, int(match.group(2)) if match.group(2) is not None else None
