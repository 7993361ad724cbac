"""Shared test settings: one torch thread (this 2-core machine is faster that way for tiny models)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("COLUMNS", "80")
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)
