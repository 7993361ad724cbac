"""How much memory a file may make relu-doctor allocate, checked before anything is read.

A zip member declares its uncompressed size, and a model's metadata declares its tensors'
shapes; a 4 MB hostile archive can declare 4 GB of either. Both are summed and compared
with a limit before the loader runs. The limit grows with the file (a legitimate torch
archive stores its tensors uncompressed, so it expands little), and
RELU_DOCTOR_MAX_LOAD_BYTES raises or lowers it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from .errors import UserError

LIMIT_ENV = "RELU_DOCTOR_MAX_LOAD_BYTES"
_FLOOR = 2**30  # any file may expand to 1 GiB
_RATIO = 16  # ... or to 16 times its own size


def load_limit(path: Path) -> int:
    """The bytes a file at `path` may expand to: RELU_DOCTOR_MAX_LOAD_BYTES, else max(1 GiB, 16x its size)."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if text:
        try:
            return parse_bytes(text)
        except ValueError:
            raise UserError(f"{LIMIT_ENV}={text!r} is not a size",
                            "Give bytes, or a number with K, M, G or T (e.g. 16G).") from None
    return max(_FLOOR, _RATIO * path.stat().st_size)


def parse_bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(text[-1:], 1)
    number = float(text[:-1] if text[-1:] in units else text)
    if not number >= 0 or number == float("inf"):
        raise ValueError(text)
    return int(number * scale)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_expansion(path: Path, needed: int, what: str) -> None:
    """Refuse `path` if loading it would allocate `needed` bytes, above the limit."""
    limit = load_limit(path)
    if needed > limit:
        raise UserError(
            f"{path} would need {human(needed)} of memory to load ({what}), above the limit of {human(limit)}",
            f"If you trust the file and have the memory, set {LIMIT_ENV} (e.g. {LIMIT_ENV}={_round_up_g(needed)}G).",
        )


def check_zip(path: Path) -> None:
    """Refuse a zip whose members declare more uncompressed bytes than the limit allows."""
    try:
        with zipfile.ZipFile(path) as z:
            declared = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a readable zip: the loader gives its own error
    check_expansion(path, declared, "the uncompressed size its zip members declare")


def _round_up_g(n: int) -> int:
    return -(-n // 2**30) + 1
