"""Run a compiled function on the OpenMP team that torch's own CPU ops run on.

Why: right after a torch op on N threads, torch's OpenMP workers spin on their cores for a
while, waiting for the next op (libgomp's default wait policy). A reduction split over
threads of our own competes with those spinning workers for the same cores and gains
little (benchmarks/README.md, "Two threads"); handed to the same team, it runs on the
workers that are already awake. libgomp's entry point for a parallel region,
`GOMP_parallel(fn, data, threads, flags)`, calls `fn(data)` on every thread of the
calling thread's team and returns when all are done; `fn` is a C function (a numba
`cfunc`), so no thread needs the GIL.

Only where the OpenMP runtime already in the process (torch's, found in the process's
memory map: Linux) exports that entry point; elsewhere `team()` is None and callers split
the work over threads of their own. Nothing here loads an OpenMP runtime: a second one
would bring a second team, the thing this module avoids.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_RUNTIMES = ("libgomp", "libomp", "libiomp5")  # GNU's; LLVM's and Intel's export GNU's entry points too


@dataclass(frozen=True)
class Team:
    """The runtime's entry points: `run` a C function on the team, and the addresses of
    `int omp_get_thread_num(void)` and `int omp_get_num_threads(void)`, which the function
    calls to find its share of the work."""

    parallel: Any  # ctypes GOMP_parallel
    thread_number: int
    team_size: int

    def run(self, function_address: int, data_address: int, threads: int) -> None:
        """function(data) on `threads` threads of the calling thread's team (the runtime may
        give fewer: the function asks for the team's size). ctypes releases the GIL."""
        self.parallel(function_address, data_address, threads, 0)


@cache
def team() -> Team | None:
    library = _loaded_runtime()
    if library is None:
        return None
    try:
        runtime = ctypes.CDLL(str(library))  # already loaded: the same copy, not a second one
        parallel, number, size = runtime.GOMP_parallel, runtime.omp_get_thread_num, runtime.omp_get_num_threads
    except (OSError, AttributeError):
        return None
    parallel.argtypes, parallel.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint], None
    address = ctypes.cast(number, ctypes.c_void_p).value, ctypes.cast(size, ctypes.c_void_p).value
    return Team(parallel, *address)  # type: ignore[arg-type]


def _loaded_runtime() -> Path | None:
    """The OpenMP runtime torch uses, if one is mapped into this process."""
    try:
        with open("/proc/self/maps") as maps:
            fields = (line.split(maxsplit=5) for line in maps)  # address, mode, offset, device, inode, path
            paths = {Path(f[5].strip()) for f in fields if len(f) == 6 and f[5].startswith("/")}
    except OSError:  # no /proc: not Linux
        return None
    torch = sys.modules.get("torch")
    # the map names files by their real paths; torch's may be reached through a symlinked venv
    folder = Path(torch.__file__).resolve().parent if torch is not None and torch.__file__ else None
    return choose_runtime(paths, folder)


def choose_runtime(mapped: set[Path], torch_folder: Path | None) -> Path | None:
    """Among the files mapped into the process, torch's OpenMP runtime: the one under torch's
    folder when there are several, else the only one; None when that is ambiguous."""
    runtimes = sorted(p for p in mapped if p.name.startswith(_RUNTIMES) and ".so" in p.name)
    own = [p for p in runtimes if torch_folder is not None and torch_folder in p.parents]
    if own:
        return own[0]
    return runtimes[0] if len(runtimes) == 1 else None
