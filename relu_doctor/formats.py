"""One entry per model format: how it is recognised, loaded, run, and (if at all) written.

A format's name is what the report's `model.format` says. Adding a format means one entry
here, its loader in loading.py and, if it runs differently, a backend in backends/.
Detection goes through the entries in order: the first whose `detect` accepts the file's
`Probe` wins (the content decides; the extension only breaks ties).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

ONNX, TORCHSCRIPT, PT2, PICKLE, STATE_DICT, SAFETENSORS, MODULE = (
    "onnx", "torchscript", "pt2", "pickle", "state_dict", "safetensors", "module")


@dataclass(frozen=True)
class Probe:
    """What detection may look at: the first bytes, the zip members (None: not a zip), the suffix."""

    head: bytes
    zip_names: frozenset[str] | None  # member names without the archive's root folder
    suffix: str
    safetensors_header: bool


@dataclass(frozen=True)
class ModelFormat:
    name: str
    title: str  # for people
    backend: str  # the backends/ module that runs it: "torch" or "onnx"
    detect: Callable[[Probe], bool] | None = None  # None: never a file (an in-memory nn.Module)
    loader: str | None = None  # "module:function" taking (path, LoadOptions), returning a LoadedModel
    patch_as: str | None = None  # what a patch of it writes by default; None: it cannot be patched
    saver: str | None = None  # "module:function" taking (model, format, site names), returning bytes
    convertible: bool = False  # an eager module: --to may write it as another format
    temp_suffix: str = ".tmp"  # torch.export reads only paths that end in .pt2

    def load(self, path: Any, options: Any) -> Any:
        if self.loader is None:
            raise ValueError(f"{self.name} is not loaded from files")
        return _named(self.loader)(path, options)

    def save(self, obj: Any, names: Any = None) -> bytes:
        """The model as this format's bytes, recording `names` (site_names.py) where it can."""
        if self.saver is None:
            raise ValueError(f"a patch cannot write {self.name}")
        return _named(self.saver)(obj, self.name, names)  # type: ignore[no-any-return]


def _named(target: str) -> Callable[..., Any]:
    """A function named "module:function" (relative to this package), imported when first used,
    so the registry imports no loader or writer (nor torch) until a format is used."""
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name, __package__), function)  # type: ignore[no-any-return]


def save_onnx(obj: Any, fmt: str, names: Any) -> bytes:  # ONNX nodes carry their names already
    from .errors import UserError

    try:
        return bytes(obj.SerializeToString())
    except ValueError:  # protobuf's 2 GiB limit
        raise UserError("the patched ONNX model is larger than 2 GiB, which relu-doctor cannot write yet",
                        "Patch a smaller model, or write --to pt2.") from None


def _zip_has(*names: str, prefix: str | None = None) -> Callable[[Probe], bool]:
    def detect(p: Probe) -> bool:
        if p.zip_names is None:
            return False
        return any(n in p.zip_names for n in names) or (
            prefix is not None and any(n.startswith(prefix) for n in p.zip_names))
    return detect


_ENTRIES = [
    ModelFormat(PT2, "torch.export .pt2", "torch", _zip_has("archive_format", prefix="models/"),
                ".loading:load_pt2_file", patch_as=PT2, saver=".patching.torch:to_bytes", temp_suffix=".tmp.pt2"),
    ModelFormat(TORCHSCRIPT, "TorchScript", "torch", _zip_has("constants.pkl", prefix="code/"),
                ".loading:load_torchscript_file", saver=".patching.torch:to_bytes"),
    ModelFormat(SAFETENSORS, "safetensors", "torch", lambda p: p.zip_names is None and p.safetensors_header,
                ".loading:load_safetensors_file", patch_as=MODULE, convertible=True),
    # torch.save (zip or legacy pickle; after safetensors, whose header length may start with 0x80):
    # a state dict, a checkpoint, or a whole module (then the loader says PICKLE)
    ModelFormat(STATE_DICT, "state dict", "torch",
                lambda p: _zip_has("data.pkl")(p) or (p.zip_names is None and p.head[:1] == b"\x80"),
                ".loading:load_torch_save_file", patch_as=MODULE, convertible=True),
    ModelFormat(PICKLE, "pickled module", "torch", patch_as=MODULE, convertible=True),
    ModelFormat(ONNX, "ONNX", "onnx",
                lambda p: p.zip_names is None and (p.suffix == ".onnx" or p.head[:1] == b"\x08"),
                ".loading:load_onnx_file", patch_as=ONNX, saver=".formats:save_onnx"),
    ModelFormat(MODULE, "pickled module", "torch", patch_as=MODULE, saver=".patching.torch:to_bytes", convertible=True),
]
FORMATS: dict[str, ModelFormat] = {f.name: f for f in _ENTRIES}
OUTPUT_FORMATS = tuple(sorted(f.name for f in _ENTRIES if f.saver is not None))


def get(name: str) -> ModelFormat:
    return FORMATS[name]


def detect(probe: Probe) -> ModelFormat | None:
    return next((f for f in _ENTRIES if f.detect is not None and f.detect(probe)), None)


def backend_of(name: str) -> ModuleType:
    """The backend module (prepare, capture, resolve_device, auto_batch_size) that runs a format."""
    return importlib.import_module(f".backends.{FORMATS[name].backend}", __package__)
