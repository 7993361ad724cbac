"""What bounds a torch scan on a memory-bound model: the cost of each pass over an activation.

    .venv/bin/python benchmarks/reduction_passes.py [--threads 1,2]

One MobileNetV2-sized ReLU6 activation, (32, 96, 112, 112) float32 (154 MB, far beyond the
caches), reduced the way backends/torch_reduce.py did it until issue 19 replaced it with one
compiled pass (backends/fused_rows.py, measured by fused_pass.py): chunk by chunk, so that only the
first op on a chunk reads main memory and the others find it in L2. Prints nanoseconds per
activation element (best of 5) for:

- one pass from main memory (a plain sum), the floor of any separate reduction;
- each op of the reduction alone over every chunk (from main memory);
- the ops added one by one to the same chunk: what each costs once the chunk is in cache;
- relu-doctor's whole update (TorchSiteAccumulator.update), and ops that looked like
  shortcuts but are slower (count_nonzero, vector_norm(ord=0), a bool mask).

Compare with the model: bare MobileNetV2 inference costs about 2.9 ns per ReLU6 element
on one thread here (benchmarks/README.md), so a scan within 10% of it must reduce in
0.29 ns per element.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relu_doctor.backends.torch_reduce import CHUNK_PER_THREAD, TorchSiteAccumulator  # noqa: E402


def per_element(y: torch.Tensor, f: Callable[[], object], reps: int = 5) -> float:
    f()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best / y.numel() * 1e9


def measure(threads: int) -> list[tuple[str, float]]:
    torch.set_num_threads(threads)
    y = torch.randn(32, 96, 112, 112).clamp_(0, 6)
    rows = y.view(32 * 96, -1)
    parts = rows.split(max(1, CHUNK_PER_THREAD * threads // rows.shape[1]))
    sign = torch.empty_like(parts[0])
    row_out = torch.empty(parts[0].shape[0])
    bits = torch.empty(parts[0].shape[0], dtype=torch.int32)

    def chunked(*ops: Callable[[torch.Tensor, int], object]) -> Callable[[], None]:
        def run() -> None:
            for a in parts:
                k = a.shape[0]
                for op in ops:
                    op(a, k)
        return run

    def sign_(a: torch.Tensor, k: int) -> object:
        return torch.sign(a, out=sign[:k])

    def row_sum(a: torch.Tensor, k: int) -> object:
        return torch.sum(a, 1, out=row_out[:k])

    def count(a: torch.Tensor, k: int) -> object:
        return torch.sum(sign[:k], 1, out=row_out[:k])

    def batch_max(a: torch.Tensor, k: int) -> object:
        return torch.amax(a)

    def row_min(a: torch.Tensor, k: int) -> object:
        return torch.amin(a.view(torch.int32), 1, out=bits[:k])

    bounded = TorchSiteAccumulator(96, torch.device("cpu"), nonnegative=True, keep_min=True)
    return [
        ("one pass from memory: sum of all", per_element(y, lambda: y.sum())),
        ("copy into new memory (read, write, page faults)", per_element(y, lambda: y.clone())),
        ("alone, chunked: row sums", per_element(y, chunked(row_sum))),
        ("alone, chunked: sign into a chunk buffer", per_element(y, chunked(sign_))),
        ("alone, chunked: batch max", per_element(y, chunked(batch_max))),
        ("alone, chunked: row minima on the bits", per_element(y, chunked(row_min))),
        ("same chunk: row sums", per_element(y, chunked(row_sum))),
        ("same chunk: + sign", per_element(y, chunked(row_sum, sign_))),
        ("same chunk: + count (sum of sign)", per_element(y, chunked(row_sum, sign_, count))),
        ("same chunk: + batch max", per_element(y, chunked(row_sum, sign_, count, batch_max))),
        ("same chunk: + row minima (bounded kinds)", per_element(y, chunked(row_sum, sign_, count, batch_max,
                                                                             row_min))),
        ("relu-doctor update, ReLU6 (all of the above)", per_element(y, lambda: bounded.update(y, 1))),
        ("shortcut? count_nonzero per row", per_element(y, lambda: torch.count_nonzero(rows, 1))),
        ("shortcut? vector_norm(ord=0) per row", per_element(y, lambda: torch.linalg.vector_norm(rows, 0, 1))),
        ("shortcut? (y > 0) as bool, summed per row", per_element(y, chunked(lambda a, k: (a > 0).sum(1)))),
        ("shortcut? aminmax per row", per_element(y, lambda: torch.aminmax(rows, dim=1))),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    args = p.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    results = {t: measure(t) for t in counts}
    print("| ns per element | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for i, (label, _) in enumerate(results[counts[0]]):
        print(f"| {label} | " + " | ".join(f"{results[t][i][1]:.3f}" for t in counts) + " |")


if __name__ == "__main__":
    main()
