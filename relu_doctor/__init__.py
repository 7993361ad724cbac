"""relu-doctor: how many of your ReLUs are dead, and where.

    import relu_doctor as rd
    report = rd.scan("model.onnx", data="batch.npy")
    report.sites[0].dead_ratio

Importing this package is cheap: numpy, torch and onnx load on first use, so
`relu-doctor --help` starts fast and an ONNX scan never imports torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ReluDoctorWarning", "Report", "Site", "UserError", "VerificationError", "__version__", "patch", "revive",
           "scan", "watch"]

_LAZY = {
    "scan": "api", "patch": "patching", "Report": "report", "Site": "report",
    "UserError": "errors", "VerificationError": "errors", "ReluDoctorWarning": "notices",
    "watch": "training.watch", "revive": "training.revive",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'relu_doctor' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy attributes are not in the module's namespace until used: list them anyway
    # (tab completion, dir(relu_doctor)); not the names this file imports for itself.
    return sorted((set(globals()) - {"Any", "annotations"}) | set(__all__))
