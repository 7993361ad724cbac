"""Format detection (from the file's content) and the loaders. Safe by default: nothing
is unpickled with code execution unless the user passed --trust-pickle."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from .archives import check_zip
from .errors import UserError, summarize_exception
from .formats import ONNX, PICKLE, PT2, SAFETENSORS, STATE_DICT, TORCHSCRIPT, Probe
from .site_names import of_object, read_archive

# ONNX, PT2, ...: the formats as the report's model.format names them (the registry is formats.py)
_CORRUPT_HINT = "The file may be truncated or corrupt; save it again."
_PICKLE_HINT = ("Unpickling runs code from the file: pass --trust-pickle only if you trust its source, "
                "or save the model as TorchScript, .pt2 or ONNX, or as a state dict used with --arch.")


@dataclass
class LoadedModel:
    format: str
    obj: Any  # nn.Module, ScriptModule, ExportedProgram or onnx.ModelProto
    path: Path | None = None
    sha256: str | None = None
    site_names: list[tuple[str, str]] | None = None  # recorded by a patch (site_names.py)
    data_files: tuple[Path, ...] = ()  # files besides `path` its tensors were read from (ONNX external data)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path) if self.path else None, "format": self.format, "sha256": self.sha256}


@dataclass(frozen=True)
class LoadOptions:
    arch: str | None = None
    arch_kwargs: dict | str | None = None
    trust_pickle: bool = False


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    """The model format, from the bytes of the file (the extension only breaks ties)."""
    from . import formats

    found = formats.detect(probe(path))
    if found is not None:
        return found.name
    if zipfile.is_zipfile(path):
        raise UserError(f"{path} is a zip archive but not a PyTorch one")
    raise UserError(f"cannot tell the format of {path}",
                    "relu-doctor reads ONNX, TorchScript, torch.export .pt2, torch.save and safetensors files.")


def probe(path: Path) -> Probe:
    """What format detection looks at; a damaged zip is refused here."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        raise UserError(f"{path} is empty", "Pass a saved model file.")
    names = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = frozenset(n.split("/", 1)[1] if "/" in n else n for n in z.namelist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:  # ValueError: undecodable member names
            raise UserError(f"{path} is a damaged archive: {e}", "Save the model again.") from None
    elif head.startswith(b"PK\x03\x04"):  # a zip's local header, but no readable directory
        raise UserError(f"{path} is a damaged zip archive (truncated?)", _CORRUPT_HINT)
    return Probe(head, names, path.suffix.lower(), _looks_like_safetensors(path, head))


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len <= path.stat().st_size - 8


def load_model(path: str | Path, arch: str | None = None, arch_kwargs: dict | str | None = None,
               trust_pickle: bool = False) -> LoadedModel:
    from . import formats

    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a FIFO, a device or a socket?)",
                        "Save the model to a file and pass that.")
    fmt = detect_format(path)
    sha = sha256_of(path)
    loaded = formats.get(fmt).load(path, LoadOptions(arch, arch_kwargs, trust_pickle))
    return replace(loaded, path=path, sha256=sha)


# The loaders the registry names: (path, options) -> LoadedModel (format, object, site names)

def load_onnx_file(path: Path, options: LoadOptions) -> LoadedModel:
    from .backends.onnx_loading import load_onnx_and_data_files

    model, data_files = load_onnx_and_data_files(path)
    return LoadedModel(ONNX, model, data_files=data_files)


def load_torchscript_file(path: Path, options: LoadOptions) -> LoadedModel:
    check_zip(path)
    module = _guard_torch(lambda t: t.jit.load(str(path), map_location="cpu"), path)
    return LoadedModel(TORCHSCRIPT, module, site_names=read_archive(path))


def load_pt2_file(path: Path, options: LoadOptions) -> LoadedModel:
    from .backends.pt2_loading import load_pt2

    program = _guard_torch(lambda t: load_pt2(path, options.trust_pickle), path)
    return LoadedModel(PT2, program, site_names=read_archive(path))


def load_safetensors_file(path: Path, options: LoadOptions) -> LoadedModel:
    return LoadedModel(SAFETENSORS, _with_arch(_load_safetensors(path), options.arch, options.arch_kwargs, path))


def load_torch_save_file(path: Path, options: LoadOptions) -> LoadedModel:
    if zipfile.is_zipfile(path):
        check_zip(path)
    return _load_torch_save(path, options.arch, options.arch_kwargs, options.trust_pickle)


def _guard_torch(load: Any, path: Path) -> Any:
    """Run a torch loader quietly: its errors become one UserError, its chatter is dropped
    (torch.jit.load's deprecation notice; torch.export logging a traceback on a bad file)."""
    import logging
    import warnings

    import torch

    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(torch)
    except UserError:
        raise
    except Exception as e:  # corrupt archives raise RuntimeError, KeyError, ValueError, ...
        raise UserError(f"cannot load {path}: {summarize_exception(e)}", _CORRUPT_HINT) from None
    finally:
        export_log.setLevel(level)


def _load_torch_save(path: Path, arch: str | None, arch_kwargs: Any, trust_pickle: bool) -> LoadedModel:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise UserError(f"cannot load {path}: {summarize_exception(e)}", _CORRUPT_HINT) from None
        if not trust_pickle:
            raise UserError(f"{path} holds pickled Python objects (probably a whole nn.Module), not only weights",
                            _PICKLE_HINT) from None
        try:
            with _cwd_importable():
                obj = torch.load(path, map_location="cpu", weights_only=False)
        except (ModuleNotFoundError, AttributeError) as e:
            raise UserError(f"{path} needs Python classes that cannot be imported here: {e}",
                            "Run from the project root that defines them, or install their package.") from None
        except Exception as e:
            raise UserError(f"cannot load {path}: {summarize_exception(e)}", _CORRUPT_HINT) from None
    except Exception as e:
        raise UserError(f"cannot load {path}: {summarize_exception(e)}", _CORRUPT_HINT) from None
    if isinstance(obj, torch.nn.Module):
        return LoadedModel(PICKLE, obj.eval(), site_names=of_object(obj))
    state = _find_state_dict(obj, path)
    return LoadedModel(STATE_DICT, _with_arch(state, arch, arch_kwargs, path))


def _find_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
    raise UserError(f"{path} holds no state dict (found: {keys})",
                    "Expected a state dict or a checkpoint with 'state_dict', 'model_state_dict' or 'model'.")


def _load_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError("reading safetensors needs the safetensors package", "pip install safetensors") from None
    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"cannot load {path}: {summarize_exception(e)}", _CORRUPT_HINT) from None


def build_arch(arch: str, arch_kwargs: dict | str | None = None) -> Any:
    """Import MODULE:CALLABLE (the current directory is importable) and call it."""
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise UserError(f"--arch {arch!r} is not MODULE:CALLABLE", "For example --arch torchvision.models:resnet18.")
    kwargs = _parse_kwargs(arch_kwargs)
    try:
        with _cwd_importable():
            factory = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # ImportError, AttributeError, or the module's own SyntaxError, ...
        raise UserError(f"cannot import --arch {arch}: {type(e).__name__}: {summarize_exception(e)}",
                        "Run from the folder that holds the module, or install it.") from None
    try:
        model = factory(**kwargs)
    except Exception as e:  # the user's factory failed: their code, not ours
        raise UserError(f"--arch {arch} failed when called with {kwargs or 'no arguments'}: "
                        f"{type(e).__name__}: {summarize_exception(e)}",
                        "Pass its arguments with --arch-kwargs '{\"name\": value}'.") from None
    import torch

    if not isinstance(model, torch.nn.Module):
        raise UserError(f"--arch {arch} returned a {type(model).__name__}, not an nn.Module")
    return model


@contextmanager
def _cwd_importable() -> Iterator[None]:
    """The current directory on sys.path while importing the user's code, as `python -m` has it."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _parse_kwargs(arch_kwargs: dict | str | None) -> dict[str, Any]:
    if arch_kwargs is None or isinstance(arch_kwargs, dict):
        return dict(arch_kwargs or {})
    try:
        parsed = json.loads(arch_kwargs)
    except json.JSONDecodeError as e:
        raise UserError(f"--arch-kwargs is not JSON: {e}", "Write it like '{\"num_classes\": 10}'.") from None
    if not isinstance(parsed, dict):
        raise UserError("--arch-kwargs must be a JSON object", "Write it like '{\"num_classes\": 10}'.")
    return parsed


def _with_arch(state: dict[str, Any], arch: str | None, arch_kwargs: Any, path: Path) -> Any:
    if arch is None:
        raise UserError(f"{path} holds weights only (a state dict)",
                        "Name the architecture: --arch MODULE:CALLABLE (e.g. --arch torchvision.models:resnet18).")
    model = build_arch(arch, arch_kwargs)
    state = _strip_prefix(state, model.state_dict().keys())
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit: "size mismatch for fc.weight: ..."
        mismatches = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        detail = f"{len(mismatches)} size mismatches, e.g. {mismatches[0]}" if mismatches else summarize_exception(e)
        raise UserError(f"the weights in {path} do not fit --arch {arch}: {detail}",
                        "Check --arch and --arch-kwargs.") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} ({_few(result.missing_keys)})")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} ({_few(result.unexpected_keys)})")
        raise UserError(f"the weights in {path} do not fit --arch {arch}: keys " + "; ".join(parts),
                        "Check --arch and --arch-kwargs.")
    return model.eval()


def _strip_prefix(state: dict[str, Any], wanted: Any) -> dict[str, Any]:
    """Lightning and DDP save keys as 'model.x' or 'module.x': strip when that makes them fit."""
    wanted = set(wanted)
    if set(state) & wanted:
        return state
    for prefix in ("model.", "module.", "net."):
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if set(stripped) & wanted:
            return stripped
    return state


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")
