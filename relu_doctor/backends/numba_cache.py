"""numba.njit with the compiled kernels cached on disk, where numba finds a place for them."""

from __future__ import annotations

from typing import Any

from numba import njit


def compiled(**options: Any) -> Any:
    """numba.njit with the kernels cached on disk where numba finds a writable place (beside
    this file, or the user's cache folder); without a cache where it finds none (a read-only
    install in a container without a home), instead of numba's RuntimeError at import. Then
    each process compiles them once (about 1.5 s)."""

    def compile_(f: Any) -> Any:
        try:
            return njit(cache=True, **options)(f)
        except RuntimeError as e:
            if "no locator available" not in str(e):
                raise
            return njit(cache=False, **options)(f)

    return compile_
