"""--data FOLDER: images become one normalised (N, 3, H, W) array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from relu_doctor.errors import UserError

Image = pytest.importorskip("PIL.Image")


def _folder(tmp_path: Path, sizes: list[tuple[int, int]]) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


class ChannelProbe(torch.nn.Module):
    """relu(x): the site sees the normalised input itself, so the test knows its answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def test_images_are_scaled_normalised_and_counted(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(8, 6)] * 5)
    report = rd.scan(ChannelProbe(), folder, mean="0.5,0.5,0.5", std="0.5,0.5,0.5")
    assert report.sample["samples"] == 5
    assert report.sample["inputs"][0]["shape"] == [3, 8, 6]
    pixels = np.stack([np.asarray(Image.open(p), np.float32) for p in sorted(folder.glob("*.png"))])
    expected = ((pixels / 255 - 0.5) / 0.5 > 0).sum(axis=(0, 1, 2))  # per channel, over N, H, W
    np.testing.assert_array_equal(report.sites[0].counters.fires, expected)


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(8, 6), (10, 10)])
    with pytest.raises(UserError, match="different sizes"):
        rd.scan(ChannelProbe(), folder)
    report = rd.scan(ChannelProbe(), folder, image_size="4,5")
    assert report.sample["inputs"][0]["shape"] == [3, 4, 5]


def test_a_folder_without_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .png or .jpg images"):
        rd.scan(ChannelProbe(), tmp_path / "empty")
