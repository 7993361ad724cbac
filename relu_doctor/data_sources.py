"""Where sample data comes from, as numpy arrays: the --data file (.npy, .npz, .pt, or a
folder of images) and the API's `data=` (arrays, tensors, lists of batches, dicts).

Tensors are converted without importing torch here; only a .pt file needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .archives import check_zip
from .errors import UserError


def load_data_file(path: Path, images: Any = None) -> dict[str, np.ndarray] | list[np.ndarray]:
    """Read --data: .npy, .npz, .pt (tensors loaded with weights_only=True) or a folder of
    images (`images`: images.ImageOptions)."""
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if path.is_dir():
        from .images import ImageOptions, load_image_folder

        return [load_image_folder(path, images or ImageOptions()).array]
    require_regular_file(path, "--data")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return [np.load(path, mmap_mode="r", allow_pickle=False)]
        if suffix == ".npz":
            check_zip(path)
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".pt":
            check_zip(path)
            return _load_torch_data(path)
    except UserError:
        raise
    except Exception as e:  # numpy and zipfile raise many types for a corrupt file
        raise UserError(f"cannot read data file {path}: {e}", "Pass a valid .npy, .npz or .pt file.") from None
    raise UserError(f"unknown data format {suffix or '(no extension)'}: {path}", "Use .npy, .npz or .pt.")


def require_regular_file(path: Path, what: str) -> None:
    """Refuse a FIFO, a device or a socket: reading one could block forever or never end."""
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file (a FIFO, a device or a socket?)",
                        "Save the data to a file and pass that.")


def _load_torch_data(path: Path) -> dict[str, np.ndarray] | list[np.ndarray]:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, torch.Tensor):
        return [obj.numpy()]
    if isinstance(obj, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in obj):
        return [t.numpy() for t in obj]
    if isinstance(obj, dict) and all(isinstance(t, torch.Tensor) for t in obj.values()):
        return {str(k): t.numpy() for k, t in obj.items()}
    raise UserError(f"{path} holds a {type(obj).__name__}, not a tensor, a list of tensors or a dict of tensors")


def as_arrays(data: Any) -> dict[str, np.ndarray] | list[np.ndarray]:
    """The API's `data=`: an array, a tensor, a list of batches or a dict by input name."""
    if isinstance(data, dict):
        return {str(k): _to_numpy(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        batches = [_to_numpy(b) if not isinstance(b, (list, tuple)) else [_to_numpy(t) for t in b] for b in data]
        if all(isinstance(b, np.ndarray) for b in batches):
            return [np.concatenate(batches)]
        return [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]
    return [_to_numpy(data)]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)
