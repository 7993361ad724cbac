"""torch.compile'd code runs eagerly while relu-doctor measures it.

The capture is a TorchDispatchMode: it sees the aten ops a forward pass dispatches. Code
that torch.compile compiled runs as fused kernels that dispatch nothing, and dynamo would
also try to trace the capture's own Python (on torch 2.13, watch() of a compiled model
crashed inside dynamo's tracing of numba). Dynamo's "force_eager" stance runs every
compiled function as the plain Python it came from: the same ops, so the same counts as
the model without torch.compile. Only while measuring: a scan, and a watch() window (its
steps run eagerly, backward included); the steps between windows keep their compiled speed.

Nothing here imports dynamo (about a second): where it is not loaded, nothing was compiled.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def force_eager() -> Any:
    """Make compiled code run eagerly from now on; returns what restores the previous stance
    (its __exit__), or None where nothing was compiled."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if not dynamo_loaded() or set_stance is None:
        return None
    return set_stance("force_eager")  # takes effect at once; __exit__ restores


def restore(stance: Any) -> None:
    if stance is not None:
        stance.__exit__(None, None, None)


@contextmanager
def compiled_code_runs_eagerly() -> Iterator[None]:
    stance = force_eager()
    try:
        yield
    finally:
        restore(stance)


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside torch.compile's wrapper (OptimizedModule), whose names are the model's."""
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, torch.nn.Module) and type(model).__name__ == "OptimizedModule":
        return inner
    return model
