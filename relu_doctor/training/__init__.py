"""Training-time tools: watch (passive and probe windows), history files, revive."""

from __future__ import annotations

from typing import Any

__all__ = ["DeadReLUAlert", "Watch", "revive", "watch"]

_LAZY = {"watch": "watch", "Watch": "watch", "DeadReLUAlert": "sinks", "revive": "revive"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'relu_doctor.training' has no attribute {name!r}")
