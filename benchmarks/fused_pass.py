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

With --only team (2 threads unless --threads says): the same activation reduced right
after a torch op on those threads, as a scan reduces it, against torch's own one-read
reductions on its OpenMP team: the pass on torch's team (backends/openmp_team.py), on
threads of its own, and on one thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from relu_doctor.backends import fused_rows, openmp_team
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
    p.add_argument("--only", choices=["short", "team"], help="only the table of short rows, or of the team")
    args = p.parse_args()
    if args.only == "team":
        on_the_team(args.threads if args.threads > 1 else 2)
        return
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


def on_the_team(threads: int) -> None:
    torch.set_num_threads(threads)
    y = torch.nn.functional.relu6(torch.randn(SHAPE))
    rows = y.numpy().reshape(SHAPE[0], SHAPE[1], -1)
    own_threads = openmp_team.team  # the pass's road where no team is found
    spent = [0.0]  # seconds in the timed call, the torch op before it left out

    def after_a_torch_op(f: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            y.mul_(1.0)  # a two-thread op: torch's workers are spinning when f starts, as in a scan
            start = time.perf_counter()
            f()
            spent[0] += time.perf_counter() - start
        return run

    def without_team(f: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            openmp_team.team = lambda: None  # type: ignore[assignment]
            try:
                f()
            finally:
                openmp_team.team = own_threads
        return run

    ways = {"torch `y.sum()`": y.sum, "torch `y.amax()`": y.amax,
            "the pass on torch's OpenMP team": lambda: fused_rows.row_stats(rows, 2, signed=False, threads=threads),
            "the pass on threads of its own": without_team(
                lambda: fused_rows.row_stats(rows, 2, signed=False, threads=threads)),
            "the pass on one thread": lambda: fused_rows.row_stats(rows, 2, signed=False, threads=1)}
    print(f"{threads} threads, {'x'.join(map(str, SHAPE))} ReLU6 float32, each right after a torch op on "
          f"{threads} threads; ns per entry, best of 15, two rounds\n")
    print("| what | round 1 | round 2 |\n|---|---:|---:|")
    results: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(2):
        for name, f in ways.items():
            timed = after_a_torch_op(f)
            timed()
            best = []
            for _ in range(15):
                spent[0] = 0.0
                timed()
                best.append(spent[0])
            results[name].append(min(best) / y.numel() * 1e9)
    for name, costs in results.items():
        print(f"| {name} | {' | '.join(f'{c:.3f}' for c in costs)} |")


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
