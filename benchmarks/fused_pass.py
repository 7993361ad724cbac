"""What the torch scan's per-activation reduction costs per entry, against one read.

    .venv/bin/python benchmarks/fused_pass.py [--threads 1]

On one MobileNetV2-sized activation (32 x 96 x 112 x 112 float32, 154 MB: far beyond the
caches), the best of 5 runs, in ns per entry:
- one torch `sum` over it: one read from memory, the least any reduction costs;
- relu-doctor's update of a ReLU6 site and of a leaky ReLU site on the compiled one-pass
  road (backends/fused_rows.py), and on the exact float64 road it falls back to;
then the one-pass kernel alone on rows of 12544 down to 49 positions (the same number of
entries), where short rows leave its vectorized loop unused; then MobileNetV2's late
layers (rows of 196 and 49 positions, 2-32 MB: in the caches, as in the model, where the
conv has just written them), per entry of the kernel alone and of relu-doctor's update,
for ReLU6 (unsigned) and leaky ReLU (signed) values.

    .venv/bin/python benchmarks/fused_pass.py --only short   # just that last table
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from relu_doctor.backends import fused_rows
from relu_doctor.backends.torch_reduce import FusedRoad, TorchSiteAccumulator

SHAPE = (32, 96, 112, 112)
SHORT_ROWS = ((32, 96, 14, 14), (32, 320, 7, 7), (32, 1280, 7, 7), (128, 1280, 7, 7))


def best_ns_per_entry(f: Callable[[], object], entries: int, reps: int = 5) -> float:
    reps = max(reps, min(200, 50_000_000 // entries))  # small activations: more runs, ~1 s
    f()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times) / entries * 1e9


def update(y: torch.Tensor, nonnegative: bool, road: str) -> Callable[[], None]:
    acc = TorchSiteAccumulator(y.shape[1], torch.device("cpu"), nonnegative, keep_min=nonnegative)
    acc.workspace.start_batch()

    def run() -> None:
        with FusedRoad.pinned(road):
            acc.update(y, 1)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["short"], help="only the table of short rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.only != "short":
        long_rows(args.threads)
    short_rows(args.threads)


def long_rows(threads: int) -> None:
    x = torch.randn(SHAPE)
    relu6, leaky = torch.nn.functional.relu6(x), torch.nn.functional.leaky_relu(x)
    n = x.numel()
    print(f"{threads} thread(s), {'x'.join(map(str, SHAPE))} float32; ns per entry, best of 5\n")
    print("| what | ns per entry |\n|---|---:|")
    print(f"| one torch sum (a read from memory) | {best_ns_per_entry(relu6.sum, n):.3f} |")
    for name, y, nonnegative in (("ReLU6", relu6, True), ("leaky ReLU", leaky, False)):
        for road in ("fused", "exact"):
            print(f"| update, {name}, {road} road | {best_ns_per_entry(update(y, nonnegative, road), n):.3f} |")
    print("\n| positions per row | rows | one-pass kernel, ns per entry |\n|---:|---:|---:|")
    flat = relu6.numpy().reshape(-1)
    for positions in (12544, 3136, 784, 196, 49):
        rows = flat.reshape(SHAPE[0], -1, positions)
        cost = best_ns_per_entry(lambda r=rows: fused_rows.row_stats(r, 2, signed=False, threads=threads), n)
        print(f"| {positions} | {rows.shape[1]} | {cost:.3f} |")


def short_rows(threads: int) -> None:
    print(f"\n{threads} thread(s), short rows (NCHW float32); ns per entry, best of 5 or more\n")
    print("| activation | kind | one-pass kernel | update |\n|---|---|---:|---:|")
    for shape in SHORT_ROWS:
        x = torch.randn(shape)
        for name, y, nonnegative in (("ReLU6", torch.nn.functional.relu6(x), True),
                                     ("leaky ReLU", torch.nn.functional.leaky_relu(x), False)):
            rows = y.numpy().reshape(shape[0], shape[1], -1)
            n = y.numel()
            kernel = best_ns_per_entry(
                lambda r=rows, s=not nonnegative: fused_rows.row_stats(r, 2, signed=s, threads=threads), n)
            whole = best_ns_per_entry(update(y, nonnegative, "fused"), n)
            print(f"| {'x'.join(map(str, shape))} | {name} | {kernel:.3f} | {whole:.3f} |")


if __name__ == "__main__":
    main()
