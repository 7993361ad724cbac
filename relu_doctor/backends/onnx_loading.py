"""Load an ONNX file safely: parse, check, and read external data only from beside the model.

External-data locations are paths written inside the model file; a hostile or careless
one (`../../etc/passwd`, an absolute path, a symlink out) would make the loader read any
file on the machine, so every location must resolve inside the model's own folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import external_data_helper

from ..errors import UserError

_REEXPORT = "The file may be truncated or corrupt; export the model again."


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """The model at `path` with its external data loaded, after onnx.checker accepted it."""
    path = Path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, RuntimeError, ... for a damaged file
        raise UserError(f"cannot read {path} as ONNX: {_first_line(e)}", _REEXPORT) from None
    if not model.graph.node and not model.graph.output and not model.opset_import:
        raise UserError(f"{path} is not an ONNX model (no graph, no opset)", _REEXPORT)
    folder = path.resolve().parent
    external = list(_external_tensors(model))
    for tensor in external:
        _check_location(tensor, folder, path)
    try:
        # Checked before the external data is read in, so the proto stays under protobuf's
        # 2 GiB; by path when there is external data (the checker resolves it from there).
        onnx.checker.check_model(str(path) if external else model)
    except Exception as e:  # ValidationError, or a C++ error for a malformed proto
        raise UserError(f"{path} is not a valid ONNX model: {_first_line(e)}", _REEXPORT) from None
    if external:
        try:
            external_data_helper.load_external_data_for_model(model, str(folder))
        except Exception as e:
            raise UserError(f"cannot read the external data of {path}: {_first_line(e)}",
                            "Keep the external-data files next to the model, as exported.") from None
    return model


def _external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored outside the file, in the main graph and all subgraphs."""
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def _check_location(tensor: onnx.TensorProto, folder: Path, path: Path) -> None:
    info = external_data_helper.ExternalDataInfo(tensor)
    location = info.location or ""
    target = (folder / location).resolve()
    if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
        raise UserError(
            f"{path}: tensor {tensor.name!r} points to external data {location!r} outside the model's folder",
            "relu-doctor only reads external data stored beside the model; refusing to read elsewhere.",
        )
    if not target.is_file():
        raise UserError(f"{path}: external data file {location!r} of tensor {tensor.name!r} is missing",
                        f"Put it next to the model, in {folder}.")
    if info.offset is not None and info.length is not None and info.offset + info.length > target.stat().st_size:
        raise UserError(f"{path}: external data file {location!r} is shorter than tensor {tensor.name!r} needs",
                        _REEXPORT)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
