"""Load a torch.export archive (.pt2) so that nothing in it can run code.

torch.export.load (torch 2.13) runs code from the file in several places:
- a weight or constant marked `use_pickle` is read with torch.load(weights_only=False);
- `opaque_obj_*` constants go through pickle.loads, `custom_obj_*` through TorchScript's
  object unpickler;
- example inputs (and legacy `data/weights/<model>.pt` files) are tried with
  weights_only=True and, when that fails, again with weights_only=False;
- `data/aotinductor/` holds compiled code that AOTInductor loads as a shared library;
- symbolic shape expressions (`expr_str`) are parsed by sympy.sympify, which calls eval.

Two layers close them. First the archive is read as a plain zip and refused (exit 2)
when it holds any of these, naming what it found. Then torch.export.load runs under a
scoped patch in which every torch.load is weights_only=True and the other unpicklers
refuse, so a place this inspection does not know of cannot run code either.
--trust-pickle turns both off: the file is then loaded as torch.export.load does.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..archives import check_expansion, check_zip
from ..errors import UserError

_TRUST_HINT = ("Loading it would run code from the file: pass --trust-pickle only if you trust its source, "
               "or export the model again with torch.export.save.")
_CONFIGS = re.compile(r"data/(weights|constants)/[^/]+_(weights|constants)_config\.json$")
# Names a shape expression may use: sympy's and torch's shape functions, assumptions, symbols
_EXPR_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Mod", "floor", "ceiling", "Abs", "sqrt", "Pow",
    "Mul", "Add", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "oo", "zoo", "nan",
    "true", "false", "True", "False", "None", "positive", "negative", "nonnegative", "nonpositive", "integer",
    "real", "finite", "nonzero", "zero", "even", "odd", "rational", "commutative",
}
_SYMBOL = re.compile(r"[a-z]+[0-9]+$")  # s0, u3, zuf1: torch's shape symbols
_SAFE_STRING = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}$")
_EXPR_OPS = {"(", ")", ",", "+", "-", "*", "/", "//", "%", "**", "=", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"}


def load_pt2(path: Path, trust_pickle: bool) -> Any:
    """The ExportedProgram in `path`; refuses (UserError) an archive that would run code."""
    import torch

    check_zip(path)
    members = _members(path)
    check_expansion(path, _metadata_bytes(members), "tensors its metadata declares")
    if not trust_pickle:
        found = _code_in_archive(members)
        if found:
            raise UserError(f"{path} is a .pt2 archive that holds {found}", _TRUST_HINT)
    try:
        with _guarded_loader(not trust_pickle):
            return torch.export.load(str(path))
    except _RefusedUnpickle as e:
        raise UserError(f"{path}: {e.message}", e.hint) from None


def _members(path: Path) -> dict[str, bytes]:
    """The archive's small text members (configs, model JSON) by name without the root folder,
    and every other member's name with empty bytes (their contents are not needed here)."""
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for info in z.infolist():
                name = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
                wanted = name.endswith(".json") and info.file_size <= 256 * 2**20
                out[name] = z.read(info) if wanted else b""
            return out
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
        raise UserError(f"{path} is a damaged archive: {e}", "Save the model again.") from None


def _payload_configs(members: dict[str, bytes]) -> Iterator[tuple[str, dict]]:
    for name, data in members.items():
        if _CONFIGS.search(name):
            try:
                config = json.loads(data).get("config", {})
            except (ValueError, AttributeError):
                continue  # torch.export.load reports a damaged config itself
            if isinstance(config, dict):
                for fqn, meta in config.items():
                    if isinstance(meta, dict):
                        yield f"{name.split('/')[1][:-1]} {fqn!r}", meta


def _code_in_archive(members: dict[str, bytes]) -> str | None:
    """What in the archive would run code when loaded, or None."""
    for what, meta in _payload_configs(members):
        path_name = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            return f"a pickled {what} (use_pickle), which torch.export.load unpickles with code execution"
        if path_name.startswith(("opaque_obj_", "custom_obj_")):
            return f"a pickled Python object as {what} ({path_name})"
    for name in members:
        if name.startswith("data/aotinductor/"):
            return f"AOTInductor compiled code ({name}), which loading would run"
        if re.fullmatch(r"data/(weights|constants)/[^/]+\.pt", name):
            return f"a legacy pickled weights file ({name})"
    for name, data in members.items():
        if name.startswith("models/") and name.endswith(".json"):
            bad = _unsafe_expression(data)
            if bad is not None:
                return f"a shape expression that is not arithmetic ({bad[:60]!r}), which sympy would eval"
    return None


def _unsafe_expression(model_json: bytes) -> str | None:
    """The first `expr_str` that is more than symbols, numbers and shape functions, or None."""
    try:
        model = json.loads(model_json)
    except ValueError:
        return None  # torch.export.load reports it
    for expr in _expr_strings(model):
        if not _is_arithmetic(expr):
            return expr
    return None


def _expr_strings(obj: Any) -> Iterator[str]:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    yield value if isinstance(value, str) else repr(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _is_arithmetic(expr: str) -> bool:
    names = _EXPR_NAMES | _torch_shape_functions()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NAME and (tok.string in names or _SYMBOL.match(tok.string)):
            continue
        if tok.type == tokenize.NUMBER:
            continue
        if tok.type == tokenize.STRING and _SAFE_STRING.match(tok.string[1:-1]) and tok.string[0] in "'\"":
            continue
        if tok.type == tokenize.OP and tok.string in _EXPR_OPS:
            continue
        return False
    return True


def _torch_shape_functions() -> set[str]:
    import sympy
    from torch.utils._sympy import functions

    return {n for n, v in vars(functions).items() if isinstance(v, type) and issubclass(v, sympy.Basic)}


def _metadata_bytes(members: dict[str, bytes]) -> int:
    """Bytes torch allocates from metadata alone: tensors whose record is empty become zeros."""
    total = 0
    for what, meta in _payload_configs(members):
        folder = "weights" if what.startswith("weight") else "constants"
        if members.get(f"data/{folder}/{meta.get('path_name')}", b"") != b"":
            continue
        sizes = (meta.get("tensor_meta") or {}).get("sizes") or []
        numel = 1
        for size in sizes:
            value = size.get("as_int", 0) if isinstance(size, dict) else 0
            numel *= max(int(value), 0) if isinstance(value, int) else 0
        total += numel * 8  # 8 bytes an element: the widest common dtype
    return total


class _RefusedUnpickle(UserError):
    pass


@contextmanager
def _guarded_loader(active: bool) -> Iterator[None]:
    """While torch.export.load runs: torch.load is weights_only=True whatever the caller
    asks, and pickle.loads / TorchScript's object unpickler refuse."""
    if not active:
        yield
        return
    import torch
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def weights_only_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except Exception as e:
            if "weights only load failed" in str(e).lower():
                raise _RefusedUnpickle("the .pt2 archive holds pickled Python objects (not only tensors)",
                                       _TRUST_HINT) from None
            raise

    def refuse(*_: Any, **__: Any) -> Any:
        raise _RefusedUnpickle("the .pt2 archive holds pickled Python objects", _TRUST_HINT)

    class _NoPickle:
        loads = staticmethod(refuse)
        load = staticmethod(refuse)

    saved = (torch.load, _package.pickle, torch._C._pickle_load_obj)
    torch.load = weights_only_load  # type: ignore[assignment]
    _package.pickle = _NoPickle  # type: ignore[assignment]
    torch._C._pickle_load_obj = refuse
    try:
        yield
    finally:
        torch.load, _package.pickle, torch._C._pickle_load_obj = saved  # type: ignore[assignment]
