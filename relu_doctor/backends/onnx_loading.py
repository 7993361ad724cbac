"""Load an ONNX file safely: parse, check, and read external data only from beside the model.

External-data locations are paths written inside the model file; a hostile or careless
one (`../../etc/passwd`, an absolute path, a symlink out) would make a loader read any
file on the machine. So relu-doctor reads every external tensor itself, after checking
its location, and hands onnxruntime a model with no external references left: it never
resolves a path on its own. "Every tensor" means every TensorProto anywhere in the
proto (initializers, sparse initializers' values and indices, node attributes, subgraphs
of If/Loop/Scan, functions, training info), found by walking the message generically
rather than by listing the places a tensor can hide.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import Message

from ..errors import UserError

_REEXPORT = "The file may be truncated or corrupt; export the model again."
_MAX_LOCATION = 4096  # PATH_MAX: longer is not a path any system can open
_OUTSIDE_HINT = "relu-doctor only reads external data stored beside the model; refusing to read elsewhere."


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """The model at `path` with its external data read in, after onnx.checker accepted it."""
    return load_onnx_and_data_files(path)[0]


def load_onnx_and_data_files(path: str | Path) -> tuple[onnx.ModelProto, tuple[Path, ...]]:
    """`load_onnx`, and the external-data files it read the model's tensors from."""
    path = Path(path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, RuntimeError, ... for a damaged file
        raise UserError(f"cannot read {path} as ONNX: {_first_line(e)}", _REEXPORT) from None
    if not model.graph.node and not model.graph.output and not model.opset_import:
        raise UserError(f"{path} is not an ONNX model (no graph, no opset)", _REEXPORT)
    folder = path.resolve().parent
    external = list(external_tensors(model))
    sources = [(tensor, *_checked_source(tensor, folder, path)) for tensor in external]
    try:
        # Checked before the external data is read in, so the proto stays under protobuf's
        # 2 GiB; by path when there is external data (the checker resolves it from there,
        # and every location was checked above to be a file inside the model's folder).
        onnx.checker.check_model(str(path) if external else model)
    except Exception as e:  # ValidationError, or a C++ error for a malformed proto
        raise UserError(f"{path} is not a valid ONNX model: {_first_line(e)}", _REEXPORT) from None
    for tensor, target, offset, length in sources:
        _read_in(tensor, target, offset, length, path)
    return model, tuple(dict.fromkeys(target for _, target, _, _ in sources))


def external_tensors(model: Message) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in `model` that stores its data outside the file."""
    stack: list[Message] = [model]
    while stack:
        message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            if message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data):
                yield message
            continue  # a tensor holds no other tensor
        for field, value in message.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            if repeated:
                if field.message_type.GetOptions().map_entry:
                    continue  # string maps (metadata): no tensors
                stack.extend(value)
            else:
                stack.append(value)


def require_in_memory(model: onnx.ModelProto) -> None:
    """Refuse a model that still points to external data (onnxruntime would resolve it
    against the current directory): load it from its path instead."""
    tensor = next(external_tensors(model), None)
    if tensor is not None:
        raise UserError(f"the ONNX model's tensor {tensor.name!r} points to external data, which relu-doctor "
                        "reads only from beside a model file",
                        "Pass the model's path, or onnx.load(path, load_external_data=True) it first.")


def _checked_source(tensor: onnx.TensorProto, folder: Path, path: Path) -> tuple[Path, int, int | None]:
    """The file, offset and length of an external tensor, after checking them."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    name = tensor.name[:80]
    if "\0" in location or len(location) > _MAX_LOCATION or any(len(p) > 255 for p in location.split("/")):
        raise UserError(f"{path}: tensor {name!r} has an external-data location that is not a file name "
                        f"({len(location)} characters{', with NUL bytes' if chr(0) in location else ''})", _REEXPORT)
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise UserError(f"{path}: tensor {name!r} has a non-numeric external-data offset or length",
                        _REEXPORT) from None
    if offset < 0 or (length is not None and length < 0):
        raise UserError(f"{path}: tensor {name!r} has a negative external-data offset or length", _REEXPORT)
    try:
        target = (folder / location).resolve()
        inside = bool(location) and not Path(location).is_absolute() and target.is_relative_to(folder)
        if inside and not target.is_file():
            raise UserError(f"{path}: external data file {location!r} of tensor {name!r} is missing"
                            + (" or not a regular file" if target.exists() else ""),
                            f"Put it next to the model, in {folder}.")
    except OSError as e:  # a symlink loop, a name too long for the file system
        raise UserError(f"{path}: cannot use external data location {location[:80]!r}: {e.strerror or e}",
                        _REEXPORT) from None
    if not inside:
        raise UserError(f"{path}: tensor {name!r} points to external data {location[:80]!r} outside the "
                        "model's folder", _OUTSIDE_HINT)
    size = target.stat().st_size
    if offset + (length or 0) > size or offset > size:
        raise UserError(f"{path}: external data file {location!r} is shorter than tensor {name!r} needs",
                        _REEXPORT)
    return target, offset, length


def _read_in(tensor: onnx.TensorProto, target: Path, offset: int, length: int | None, path: Path) -> None:
    """Move the tensor's bytes into the proto: no external reference is left for anyone to resolve."""
    try:
        with target.open("rb") as f:
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
    except OSError as e:
        raise UserError(f"cannot read the external data of {path}: {e.strerror or e}",
                        "Keep the external-data files next to the model, as exported.") from None
    tensor.raw_data = data
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
