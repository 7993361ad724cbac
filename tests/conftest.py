"""Shared test settings: one torch thread (this 2-core machine is faster that way for tiny models)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("COLUMNS", "80")
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def all_formats(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Path]]:
    """`all_formats(case_name)`: that catalogue case saved in each of its formats (format ->
    path), written once per session however many test modules ask (saving TorchScript, .pt2
    and ONNX is most of what these fixtures cost). Tests only read these files."""
    from tests.models import case, save_all_formats

    folder = tmp_path_factory.mktemp("formats")
    saved: dict[str, dict[str, Path]] = {}

    def get(name: str) -> dict[str, Path]:
        if name not in saved:
            saved[name] = save_all_formats(case(name), folder / name)
        return saved[name]

    return get
