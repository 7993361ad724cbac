"""--data FOLDER: a folder of .png / .jpg images as one float32 (N, 3, H, W) array.

Pillow is an optional extra (`pip install relu-doctor[images]`), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (H, W) to resize to; None: all images must share a size
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel, after scaling to [0, 1]
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


def parse_floats(text: str | None, flag: str, count: int | None = None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a list of numbers", f"Write it like {flag} 0.5,0.5,0.5.") from None
    if count is not None and len(values) != count:
        raise UserError(f"{flag} needs {count} values (got {len(values)})")
    return values


def image_options(image_size: str | tuple[int, int] | None, mean: str | tuple | None,
                  std: str | tuple | None) -> ImageOptions:
    size = parse_floats(image_size, "--image-size", 2) if isinstance(image_size, str) else image_size
    means = parse_floats(mean, "--mean", 3) if isinstance(mean, str) else mean
    stds = parse_floats(std, "--std", 3) if isinstance(std, str) else std
    if stds is not None and any(s <= 0 for s in stds):
        raise UserError("--std values must be positive")
    return ImageOptions(
        size=None if size is None else (int(size[0]), int(size[1])),
        mean=tuple(means) if means is not None else ImageOptions.mean,
        std=tuple(stds) if stds is not None else ImageOptions.std,
    )


def load_image_folder(folder: Path, options: ImageOptions) -> np.ndarray:
    """Images sorted by file name, as RGB, scaled to [0, 1], then (x - mean) / std."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading a folder of images needs Pillow",
                        "pip install 'relu-doctor[images]' (or pip install pillow).") from None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"--data {folder} holds no .png or .jpg images")
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if options.size is not None:
                    rgb = rgb.resize((options.size[1], options.size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        except OSError as e:
            raise UserError(f"cannot read image {path}: {e}", "Remove it or fix it.") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"the images in {folder} have different sizes ({len(shapes)} kinds)",
                        "Resize them all with --image-size H,W.")
    batch = np.stack(arrays)
    mean = np.asarray(options.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(options.std, np.float32).reshape(1, 3, 1, 1)
    return (batch - mean) / std
