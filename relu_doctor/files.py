"""Writing outputs atomically: a temporary file in the target's folder, then a rename.

A crash or an error leaves the old file (or none), never a partial one.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .errors import UserError


def check_output_path(out: Path, protected: Sequence[Path] = (), force: bool = True) -> None:
    """Refuse an output that would overwrite an input, or a folder, or an existing file without --force."""
    for p in protected:
        if out.resolve() == p.resolve():
            raise UserError(f"refusing to overwrite the input {p} with the output", "Choose another -o path.")
    if out.is_dir():
        raise UserError(f"-o {out} is a folder", "Give a file path.")
    if out.exists() and not force:
        raise UserError(f"{out} exists", "Pass --force to replace it.")
    if not out.parent.exists():
        raise UserError(f"the folder of -o {out} does not exist", "Create it first.")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write to {out.parent}", "Choose a writable -o path.")


@contextmanager
def atomic_path(out: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `out`; on success it replaces `out`, on error it is removed.

    `suffix` ends the temporary name, for writers that insist on an extension (.pt2).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600; the output gets the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(out: Path, text: str) -> None:
    try:
        with atomic_path(out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:  # permissions, a full disk, a path like /proc/x
        raise UserError(f"cannot write {out}: {e.strerror or e}", "Choose a writable -o path.") from None
