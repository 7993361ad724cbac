"""relu-doctor: how many of your ReLUs are dead, and where.

    import relu_doctor as rd
    report = rd.scan("model.onnx", data="batch.npy")
    report.sites[0].dead_ratio

Importing this package does not import torch or onnx: each backend loads on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import scan  # noqa: E402
from .errors import UserError, VerificationError  # noqa: E402
from .report import Report, Site  # noqa: E402

__all__ = ["Report", "Site", "UserError", "VerificationError", "__version__", "scan"]
