"""numba's compilers with their code cached on disk where numba finds a writable place.

The compiled passes (backends/fused_rows.py, patching/leak_check.py) take 0.5-1.5 s to
compile; the cache makes that once per install instead of once per process.
"""

from __future__ import annotations

from typing import Any

from numba import njit


def compiled(sig: Any = None, compile_with: Any = njit, **options: Any) -> Any:
    """numba.njit (or cfunc, with its signature) with the code cached on disk where numba
    finds a writable place (beside the source file, or the user's cache folder); without a cache
    where it finds none (a read-only install in a container without a home), instead of
    numba's RuntimeError at import. Then each process compiles them once (about 1.5 s)."""
    signature = () if sig is None else (sig,)

    def compile_(f: Any) -> Any:
        try:
            return compile_with(*signature, cache=True, **options)(f)
        except RuntimeError as e:
            if "no locator available" not in str(e):
                raise
            return compile_with(*signature, cache=False, **options)(f)

    return compile_
