"""The capture's clamp pass (backends/fused_clamp.py) against torch's own op, run by hand.

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python benchmarks/clamp_pass.py [--threads 1]

1. Per entry, on MobileNetV2-like shapes at batch 32: torch's clamp alone, torch's clamp
   followed by the read that measured it before (fused_rows.row_stats), and the pass that
   computes and measures in one go, out of place and in place.
2. Summed over MobileNetV2's ReLU6 sites (their real shapes, from hooks): torch's in-place
   hardtanh_ against the in-place pass, per batch and by positions per row.
Medians of 7 (part 1) and 5 (part 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

from relu_doctor.backends import fused_clamp, fused_rows  # noqa: E402

SHAPES = (((32, 32, 112 * 112), 2), ((32, 144, 56 * 56), 2), ((32, 384, 14 * 14), 2), ((32, 196, 384), 1))


def median_seconds(run: object, reps: int, fresh: object = None) -> float:
    times = []
    for _ in range(reps):
        arguments = fresh() if callable(fresh) else ()
        start = time.perf_counter()
        run(*arguments)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def per_entry(threads: int) -> None:
    print("| activation | red | torch clamp | + the read | computed here | in place |\n|---|---:|---:|---:|---:|---:|")
    for shape, red in SHAPES:
        print(_entry_row(shape, red, threads))


def _entry_row(shape: tuple[int, ...], red: int, threads: int) -> str:
    x = torch.randn(*shape)
    out = torch.empty_like(x)
    xv, ov = x.numpy(), out.numpy()
    fused_clamp.clamp_row_stats(xv, ov, red, 6.0, threads)  # compile or load
    ns = 1e9 / x.numel()
    clamp = median_seconds(lambda: torch.clamp(x, 0, 6, out=out), 7)
    read = median_seconds(lambda: (torch.clamp(x, 0, 6, out=out),
                                   fused_rows.row_stats(ov, red, signed=False, threads=threads)), 7)
    computed = median_seconds(lambda: fused_clamp.clamp_row_stats(xv, ov, red, 6.0, threads), 7)
    in_place = median_seconds(lambda a: fused_clamp.clamp_row_stats(a, a, red, 6.0, threads), 7,
                              lambda: (x.clone().numpy(),))
    return (f"| {' x '.join(map(str, shape))} | {red} | {clamp * ns:.3f} | {read * ns:.3f} | "
            f"{computed * ns:.3f} | {in_place * ns:.3f} |")


def mobilenet_sites(threads: int) -> None:
    model = bench_models.build("mobilenet_v2").eval()
    shapes: list[tuple[int, ...]] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Hardtanh):  # ReLU6 is one
            module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    with torch.inference_mode():
        model(torch.randn(32, 3, 224, 224))
    by_positions: dict[int, list[float]] = {}
    for shape in shapes:
        theirs, ours = _site_seconds(shape, threads)
        entry = by_positions.setdefault(int(np.prod(shape[2:])), [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += theirs
        entry[2] += ours
    print("\n| positions per row | sites | torch hardtanh_ ms | computed here, in place ms |\n|---:|---:|---:|---:|")
    for positions, (sites, theirs, ours) in sorted(by_positions.items()):
        print(f"| {positions} | {sites} | {theirs * 1e3:.1f} | {ours * 1e3:.1f} |")
    total_theirs = sum(v[1] for v in by_positions.values())
    total_ours = sum(v[2] for v in by_positions.values())
    print(f"| all | {len(shapes)} | {total_theirs * 1e3:.1f} | {total_ours * 1e3:.1f} |")


def _site_seconds(shape: tuple[int, ...], threads: int) -> tuple[float, float]:
    """torch's in-place hardtanh_ and the in-place pass on one site's shape."""
    x = torch.randn(*shape)
    rows = x.numpy().reshape(shape[0], shape[1], -1)
    theirs = median_seconds(lambda a: torch.nn.functional.hardtanh_(a, 0.0, 6.0), 5, lambda: (x.clone(),))
    ours = median_seconds(lambda a: fused_clamp.clamp_row_stats(a, a, 2, 6.0, threads), 5, lambda: (rows.copy(),))
    return theirs, ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), ns per entry\n")
    per_entry(args.threads)
    mobilenet_sites(args.threads)


if __name__ == "__main__":
    main()
