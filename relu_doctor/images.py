"""--data FOLDER: a folder of images (any layout, any format Pillow reads) as one float32
(N, 3, H, W) array, with what was read and skipped.

Pillow is an optional extra (`pip install relu-doctor[images]`), imported only here.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .limits import check_sample_bytes


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (H, W) to resize to; None: all images must share a size
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # per channel, after scaling to [0, 1]
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclass
class ImageFolder:
    """The images of a folder as one batch, and what the report's `sample` says about them."""

    array: np.ndarray  # (N, 3, H, W) float32, normalised
    info: dict[str, Any]  # size, mean, std, files, skipped
    warnings: list[str] = field(default_factory=list)


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


def parse_size(text: str) -> tuple[int, int]:
    """'224' (square) or 'H,W' -> (H, W)."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise UserError(f"--image-size {text!r} is not a size", "Write it like 224 or 224,160 (H,W).") from None
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise UserError(f"--image-size {text!r} must be one or two positive numbers", "Write it like 224 or 224,160.")
    return (values[0], values[-1])


def image_options(image_size: str | int | tuple[int, int] | None, mean: str | tuple | None,
                  std: str | tuple | None) -> ImageOptions:
    if isinstance(image_size, str):
        size: tuple[int, int] | None = parse_size(image_size)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = None if image_size is None else (int(image_size[0]), int(image_size[-1]))
    if size is not None:  # refused before any image is decoded at that size
        check_sample_bytes(_image_bytes(*size), f"one {size[0]}x{size[1]} image", "Give a smaller --image-size.")
    means = parse_floats(mean, "--mean", 3) if isinstance(mean, str) else mean
    stds = parse_floats(std, "--std", 3) if isinstance(std, str) else std
    if stds is not None and any(not (s > 0 and math.isfinite(s)) for s in stds):
        raise UserError("--std values must be positive, finite numbers")
    if means is not None and not all(math.isfinite(m) for m in means):
        raise UserError("--mean values must be finite numbers")
    return ImageOptions(
        size=size,
        mean=tuple(means) if means is not None else ImageOptions.mean,
        std=tuple(stds) if stds is not None else ImageOptions.std,
    )


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading a folder of images needs Pillow",
                        "pip install 'relu-doctor[images]' (or pip install pillow).") from None
    return Image


# Pillow registers these but cannot decode them by itself (stub plugins that need a handler,
# EPS needs Ghostscript, MPEG is header-only): a .h5 beside the images is not an image.
_NOT_DECODED = frozenset({"BUFR", "GRIB", "HDF5", "WMF", "MPEG", "EPS"})


def readable_suffixes(Image: Any) -> set[str]:
    """File extensions of the formats this Pillow decodes (.png, .jpg, .webp, .bmp, .tif, ...)."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in _NOT_DECODED}


def load_image_folder(folder: Path, options: ImageOptions) -> ImageFolder:
    """Every image under `folder` (class subfolders included), sorted by relative path, as
    RGB, scaled to [0, 1], then (x - mean) / std. Other files are skipped and counted."""
    Image = _pillow()
    suffixes = readable_suffixes(Image)
    files: list[Path] = []
    skipped: Counter[str] = Counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints): never data
        suffix = path.suffix.lower()
        if suffix in suffixes:
            files.append(path)
        else:
            skipped[suffix or "(no extension)"] += 1
    if not files:
        raise UserError(f"--data {folder} holds no images", "Pass a folder of images Pillow reads "
                        "(.png, .jpg, .webp, .bmp, ...), directly or in class subfolders.")
    _check_folder_bytes(Image, files, options)
    arrays = [_read(Image, path, options) for path in files]
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        (common, _), (other, _) = shapes.most_common(2)
        raise UserError(f"the images in {folder} have different sizes ({len(shapes)} kinds, e.g. "
                        f"{common[1]}x{common[2]} and {other[1]}x{other[2]})",
                        "Resize them all with --image-size H,W (or one number for a square).")
    batch = np.stack(arrays)
    mean = np.asarray(options.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(options.std, np.float32).reshape(1, 3, 1, 1)
    notes = []
    if skipped:
        kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
        n = sum(skipped.values())
        notes.append(f"--data {folder}: skipped {n} file{'s' if n > 1 else ''} that Pillow does not read as "
                     f"images ({kinds})")
    info = {"size": list(batch.shape[2:]), "mean": list(options.mean), "std": list(options.std),
            "files": len(files), "skipped": sum(skipped.values())}
    return ImageFolder((batch - mean) / std, info, notes)


def _image_bytes(height: int, width: int) -> int:
    return height * width * 3 * (4 + 1)  # the float32 array and Pillow's 8-bit RGB decode of it


def _check_folder_bytes(Image: Any, files: list[Path], options: ImageOptions) -> None:
    """What decoding every image would need, from the headers, before any is decoded."""
    need = 0
    for path in files:
        height, width = options.size or (0, 0)
        if options.size is None:
            try:
                with Image.open(path) as image:  # reads the header only
                    width, height = image.size
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                continue  # _read says what is wrong with this file
        need += _image_bytes(height, width)
    check_sample_bytes(need, f"decoding the {len(files)} images of the --data folder",
                       "Resize them with --image-size H,W, or pass fewer images.")


def _read(Image: Any, path: Path, options: ImageOptions) -> np.ndarray:
    """One image as (3, H, W) in [0, 1]. A decompression bomb (more pixels than Pillow's
    limit) is refused before it is decoded, like any unreadable file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if options.size is not None:
                    rgb = rgb.resize((options.size[1], options.size[0]), Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"image {path} is too large to decode safely: {e}",
                        "Shrink it, or remove it from the folder.") from None
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for broken files
        raise UserError(f"cannot read image {path}: {e}", "Remove it or fix it.") from None
