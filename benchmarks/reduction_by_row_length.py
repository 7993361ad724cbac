"""Where a MobileNetV2 scan's reduction time goes, by the length of its (sample, channel) rows.

    .venv/bin/python benchmarks/reduction_by_row_length.py

MobileNetV2 (bench_models.py), 128 samples at batch 32, torch on one thread; the scan of
the lowest total of 3 (after a warm-up). For each row length (49 = 7x7 maps ... 12544 =
112x112): the seconds in the sites' updates (`TorchSiteAccumulator.update`: the compiled
pass, the fold into the site's counters, the Python around them) and in the compiled pass
alone (`fused_rows.row_stats`), per entry of the activations.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

import relu_doctor  # noqa: E402
from relu_doctor.backends import fused_rows, torch_reduce  # noqa: E402


def timed(f: Callable[..., Any], seconds: dict[int, float], length: Callable[..., int]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            seconds[length(*args)] += time.perf_counter() - start

    return run


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    updates: defaultdict[int, float] = defaultdict(float)
    passes: defaultdict[int, float] = defaultdict(float)
    entries: defaultdict[int, int] = defaultdict(int)

    def update_length(acc: object, y: torch.Tensor, axis: int) -> int:
        length = y[0, 0].numel() if y.dim() > 2 else 1
        entries[length] += y.numel()
        return length

    torch_reduce.TorchSiteAccumulator.update = timed(  # type: ignore[method-assign]
        torch_reduce.TorchSiteAccumulator.update, updates, update_length)
    fused_rows.row_stats = timed(  # type: ignore[assignment]
        fused_rows.row_stats, passes, lambda y3, red, *a, **k: y3.shape[2] if red == 2 else 1)
    model = bench_models.build("mobilenet_v2")
    data = np.random.default_rng(0).standard_normal((128, 3, 224, 224)).astype(np.float32)
    relu_doctor.scan(model, data=data[:32], batch_size=32)  # warm-up: kernels loaded, threads chosen
    best: tuple[float, dict[int, float], dict[int, float], dict[int, int]] | None = None
    for _ in range(3):
        updates.clear()
        passes.clear()
        entries.clear()
        relu_doctor.scan(model, data=data, batch_size=32)
        total = sum(updates.values())
        if best is None or total < best[0]:
            best = total, dict(updates), dict(passes), dict(entries)
    assert best is not None
    total, u, p, e = best
    print(f"MobileNetV2, 128 samples, 1 thread: {total * 1e3:.1f} ms in the sites' updates\n")
    print("| positions per row | entries | updates, ms | ns per entry | compiled pass, ns per entry |")
    print("|---:|---:|---:|---:|---:|")
    for length in sorted(u):
        print(f"| {length} | {e[length] / 1e6:.1f} M | {u[length] * 1e3:.1f} | {u[length] / e[length] * 1e9:.3f} "
              f"| {p.get(length, 0.0) / e[length] * 1e9:.3f} |")


if __name__ == "__main__":
    main()
