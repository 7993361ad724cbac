"""Writing outputs: nothing partial, nothing left behind, nothing replaced that is not a file.

- A regular OUT is written to a temporary file in its folder, then renamed into place:
  a crash or an error leaves the old file (or none), never a partial one. Without --force
  the rename is a hard link, which fails if OUT appeared meanwhile, so two concurrent
  runs cannot both write.
- A non-regular OUT (a FIFO, a device, /dev/stdout) is never replaced by a file: the
  bytes are written through to it once they are complete.
- SIGTERM and SIGHUP become an exception while a temporary file exists, so the cleanup
  runs; the process then exits 128 + the signal number, as the shell expects.
- Callers hand over bytes already in memory (torch's writers write to a buffer first), so
  a full disk is an OSError here, exit 2, never an abort inside a C++ writer.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import UserError

_LIVE: set[Path] = set()  # temporary files that exist right now, for remove_temporaries()
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # signals that unwind through `finally` (terminate_cleanly)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while an output was being written (cleanup runs on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def is_special(out: Path) -> bool:
    """True for an existing OUT that is not a regular file: a FIFO, a device, a socket, /dev/stdout."""
    try:
        return not stat.S_ISREG(os.stat(out).st_mode) and not stat.S_ISDIR(os.stat(out).st_mode)
    except OSError:
        return False


def check_output_path(out: Path, protected: Sequence[Path] = (), force: bool = True) -> None:
    """Refuse an output that would overwrite an input, or a folder, or an existing file without --force."""
    for p in protected:
        if out.resolve() == p.resolve():
            raise UserError(f"refusing to overwrite the input {p} with the output", "Choose another -o path.")
    if out.is_dir():
        raise UserError(f"-o {out} is a folder", "Give a file path.")
    if is_special(out):
        if not os.access(out, os.W_OK):
            raise UserError(f"cannot write to {out}", "Choose a writable -o path.")
        return  # written through, never replaced: nothing to clobber
    if out.exists() and not force:
        raise UserError(f"{out} exists", "Pass --force to replace it.")
    if not out.parent.exists():
        raise UserError(f"the folder of -o {out} does not exist", "Create it first.")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"cannot write to {out.parent}", "Choose a writable -o path.")


@contextmanager
def atomic_path(out: Path, suffix: str = ".tmp", force: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success its content becomes `out`, on any exit it is removed.

    `suffix` ends the temporary name, for writers that insist on an extension (.pt2).
    Without `force`, an `out` that exists when the content is committed is refused.
    """
    special = is_special(out)
    # A device's folder (/dev) is no place for a temporary file; a FIFO's may be read-only
    folder = Path(tempfile.gettempdir()) if special else out.parent
    with terminate_cleanly():
        tmp_path: Path | None = None
        # A signal between creating the file and entering `try` would leave it behind: hold
        # SIGTERM/SIGHUP until the name is registered; one that came meanwhile lands inside `try`.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATING)
        try:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=folder)
                os.close(fd)
                tmp_path = Path(tmp)
                _LIVE.add(tmp_path)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600; the output gets the usual permissions
            yield tmp_path
            if special:
                _write_through(tmp_path, out)
            else:
                _commit(tmp_path, out, force)
        finally:
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
                _LIVE.discard(tmp_path)


def remove_temporaries() -> None:
    """Remove every temporary output file still open: for a process about to end abruptly."""
    for path in list(_LIVE):
        path.unlink(missing_ok=True)


def _write_through(tmp: Path, out: Path) -> None:
    with tmp.open("rb") as src, open(out, "wb") as dst:  # O_TRUNC is a no-op on FIFOs and devices
        shutil.copyfileobj(src, dst, 1 << 20)


def _commit(tmp: Path, out: Path, force: bool) -> None:
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # fails if OUT exists: no clobbering, even by a concurrent run
    except FileExistsError:
        raise UserError(f"{out} exists (another run wrote it meanwhile)", "Pass --force to replace it.") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # no hard links on this file system: claim the name exclusively, then fill it
        try:
            os.close(os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise UserError(f"{out} exists (another run wrote it meanwhile)",
                            "Pass --force to replace it.") from None
        os.replace(tmp, out)


def write_bytes(out: Path, data: bytes, force: bool = True, what: str = "-o path") -> None:
    """Write `data` to `out` as atomic_path does; an OSError (full disk, permissions) is exit 2."""
    try:
        with atomic_path(out, force=force) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise write_error(out, e, what) from None


def atomic_write_text(out: Path, text: str, force: bool = True) -> None:
    write_bytes(out, text.encode("utf-8"), force)


def write_error(out: Path, e: OSError, what: str = "-o path") -> UserError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return UserError(f"cannot write {out}: {e.strerror or e} (nothing was written)",
                         "Free some space, or choose an -o path on another disk.")
    return UserError(f"cannot write {out}: {e.strerror or e}", f"Choose a writable {what}.")


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise Terminated (so `finally` blocks run) instead of
    killing the process outright. A no-op outside the main thread, where Python cannot
    install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(signum)

    previous = {}
    for sig in _TERMINATING:
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, None):  # keep a handler someone else installed
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
