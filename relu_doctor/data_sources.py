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
        return [tensor_to_numpy(obj)]
    if isinstance(obj, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in obj):
        return [tensor_to_numpy(t) for t in obj]
    if isinstance(obj, dict) and all(isinstance(t, torch.Tensor) for t in obj.values()):
        return {str(k): tensor_to_numpy(t) for k, t in obj.items()}
    raise UserError(f"{path} holds a {type(obj).__name__}, not a tensor, a list of tensors or a dict of tensors")


_DATA_HINT = "Give an array or tensor (samples first), a list of such batches, or {input name: array}."


def as_arrays(data: Any) -> dict[str, np.ndarray] | list[np.ndarray]:
    """The API's `data=`: an array, a tensor, a list of batches (each an array, or a tuple
    with one array per input), a dict by input name, or nested lists of numbers (one array)."""
    if isinstance(data, dict):
        if not data:
            raise UserError("data= is an empty dict: no input to run", _DATA_HINT)
        return {str(k): _to_numpy(v, f"data[{k!r}]") for k, v in data.items()}
    if not isinstance(data, (list, tuple)) or not any(_holds_arrays(b) for b in data):
        if isinstance(data, (list, tuple)) and not data:
            raise UserError("data= is an empty list: no batch to run", _DATA_HINT)
        return [_to_numpy(data, "data=")]
    if all(_is_array(b) for b in data):
        return [_joined([_to_numpy(b, f"data[{i}]") for i, b in enumerate(data)], "data=")]
    widths = {len(b) if isinstance(b, (list, tuple)) else -1 for b in data}
    if len(widths) != 1 or -1 in widths:
        raise UserError("data=: the batches hold different numbers of inputs (an array here, a tuple of "
                        "another length there)", "Give every batch as one array, or every one as a tuple with "
                        "one array per model input, in the same order.")
    per_input = zip(*[[_to_numpy(t, f"data[{i}][{j}]") for j, t in enumerate(b)] for i, b in enumerate(data)])
    return [_joined(list(arrays), f"data=, input {j}") for j, arrays in enumerate(per_input)]


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or hasattr(x, "detach")  # a tensor, without importing torch


def _holds_arrays(x: Any) -> bool:
    return _is_array(x) or (isinstance(x, (list, tuple)) and any(_is_array(t) for t in x))


def _joined(batches: list[np.ndarray], what: str) -> np.ndarray:
    """The batches as one sample, along the first axis."""
    if any(b.ndim == 0 for b in batches):
        raise UserError(f"{what}: a batch is a single number, not samples", _DATA_HINT)
    try:
        return np.concatenate(batches)
    except ValueError:
        shapes = ", ".join(str(tuple(b.shape)) for b in batches[:4])
        raise UserError(f"{what}: the batches do not join into one sample: shapes {shapes}"
                        f"{', ...' if len(batches) > 4 else ''}",
                        "Give batches whose shapes agree after the first (samples) axis.") from None


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A torch tensor as a numpy array on the host, bfloat16 as float32 (numpy has no
    bfloat16; float32 holds every value). Does not import torch."""
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    return t.numpy()


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return tensor_to_numpy(x)
    try:
        array = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise UserError(f"{what} is not an array: {e}", _DATA_HINT) from None
    if array.dtype == object:
        raise UserError(f"{what} holds {type(x).__name__} values, not numbers", _DATA_HINT)
    return array
