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
    with pytest.raises(UserError, match="holds no images"):
        rd.scan(ChannelProbe(), tmp_path / "empty")


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_class_subfolders_and_every_pillow_format_are_read_and_skips_are_said(tmp_path: Path) -> None:
    """imgs/cat/*.png, imgs/dog/*.webp ...: read recursively in sorted path order; what is not
    an image is skipped with a warning, and the report's sample records size, mean and std."""
    rng = np.random.default_rng(1)
    pixels = {f"{label}/{i}.{ext}": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
              for label, ext in (("cat", "png"), ("dog", "bmp"), ("eel", "webp"), ("fox", "tiff")) for i in range(2)}
    for name, image in pixels.items():
        _save(tmp_path / "imgs" / name, image)
    (tmp_path / "imgs" / "cat" / "labels.csv").write_text("a,b")
    (tmp_path / "imgs" / "README").write_text("x")
    (tmp_path / "imgs" / ".DS_Store").write_bytes(b"\0")
    report = rd.scan(ChannelProbe(), tmp_path / "imgs", mean="0.5,0.5,0.5", std="0.25,0.5,1")
    assert report.sample["samples"] == 8
    assert report.sample["images"] == {"size": [4, 4], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0],
                                       "files": 8, "skipped": 2}
    assert any("skipped 2 files" in w and "1 .csv" in w and "1 (no extension)" in w for w in report.warnings)
    # webp is written lossy by default: read the decoded pixels back for the reference
    decoded = np.stack([np.asarray(Image.open(tmp_path / "imgs" / n).convert("RGB"), np.float32)
                        for n in sorted(pixels)])
    normalised = (decoded / 255 - np.array([0.5, 0.5, 0.5])) / np.array([0.25, 0.5, 1.0])
    np.testing.assert_array_equal(report.sites[0].counters.fires, (normalised > 0).sum(axis=(0, 1, 2)))


def test_one_number_image_size_is_a_square(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [(8, 6), (10, 10)])
    report = rd.scan(ChannelProbe(), folder, image_size="16")
    assert report.sample["inputs"][0]["shape"] == [3, 16, 16]
    assert report.sample["images"]["size"] == [16, 16]
    with pytest.raises(UserError, match="one or two positive numbers"):
        rd.scan(ChannelProbe(), folder, image_size="1,2,3")


@pytest.mark.parametrize("pixels", [3000, 5000], ids=["over-the-limit", "over-twice-the-limit"])
def test_a_decompression_bomb_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int) -> None:
    """Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are the user's
    file, exit 2 (the limit is lowered here so that the bomb stays small)."""
    from typer.testing import CliRunner

    from relu_doctor.cli import app

    side = int(pixels**0.5)
    _save(tmp_path / "imgs" / "big.png", np.zeros((side, side, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    model = tmp_path / "m.pt"
    torch.jit.script(ChannelProbe()).save(str(model))
    result = CliRunner().invoke(app, ["scan", str(model), "--data", str(tmp_path / "imgs")])
    assert result.exit_code == 2, result.output
    assert "too large to decode safely" in result.output
