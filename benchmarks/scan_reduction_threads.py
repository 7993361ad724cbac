"""What the torch scan costs on MobileNetV2 beyond its reduction, and how many threads the
reduction should use, measured inside a scan.

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python benchmarks/scan_reduction_threads.py [--threads 2] [--torchscript | --pt2]

MobileNetV2 (bench_models.py; traced with --torchscript, exported with a static batch with
--pt2: bare inference runs `program.module()`, built once), 128 samples at batch 32, torch on
--threads threads. Interleaved, best of 4 wall and CPU times: bare inference; the scan
with its reduction switched off (what the capture alone costs); the scan with the
reduction's threads pinned to 1, pinned to --threads, and chosen by
`torch_reduce.Workspace` as in a real scan.
For each, the seconds spent in the sites' updates and the reduction's cost per entry of
the large activations (2M entries or more). Run it also with OMP_WAIT_POLICY=PASSIVE to
see what torch's spinning OpenMP worker takes from a second reduction thread.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

import relu_doctor  # noqa: E402
from relu_doctor.backends import fused_rows, torch_reduce  # noqa: E402

SAMPLES, BATCH, LARGE = 128, 32, 2 << 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torchscript", action="store_true", help="scan the traced model")
    p.add_argument("--pt2", action="store_true", help="scan the model exported with torch.export (batch 32)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    model = bench_models.build("mobilenet_v2")
    if args.torchscript:
        model = torch.jit.trace(model, torch.randn(2, 3, 224, 224))
    forward = model
    if args.pt2:
        model = torch.export.export(model, (torch.randn(BATCH, 3, 224, 224),))
        forward = model.module()
    data = np.random.default_rng(0).standard_normal((SAMPLES, 3, 224, 224)).astype(np.float32)

    pinned = [0]  # 0: the Workspace chooses
    choose = torch_reduce.Workspace.start_batch

    def start_batch(self: torch_reduce.Workspace) -> None:
        choose(self)
        if pinned[0]:
            self.threads = pinned[0]

    update, row_stats = torch_reduce.TorchSiteAccumulator.update, fused_rows.row_stats
    spent, large = [0.0], [0.0, 0]  # update seconds; kernel seconds and entries of large activations

    reduce = [True]

    def timed_update(self: torch_reduce.TorchSiteAccumulator, y: torch.Tensor, axis: int) -> None:
        start = time.perf_counter()
        if reduce[0]:
            update(self, y, axis)
        spent[0] += time.perf_counter() - start

    def timed_rows(y3: np.ndarray, *a: object, **k: object) -> fused_rows.RowStats:
        start = time.perf_counter()
        out = row_stats(y3, *a, **k)  # type: ignore[arg-type]
        if y3.size >= LARGE:
            large[0] += time.perf_counter() - start
            large[1] += y3.size
        return out

    torch_reduce.Workspace.start_batch = start_batch  # type: ignore[method-assign]
    torch_reduce.TorchSiteAccumulator.update = timed_update  # type: ignore[method-assign]
    fused_rows.row_stats = timed_rows  # type: ignore[assignment]

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, SAMPLES, BATCH):
                forward(torch.from_numpy(data[i: i + BATCH]))

    def scan(threads: int, reducing: bool = True) -> None:
        pinned[0], reduce[0] = threads, reducing
        relu_doctor.scan(model, data=data, batch_size=BATCH)

    ways = {"bare": bare, "scan, reduction switched off": lambda: scan(0, reducing=False),
            "scan, reduce on 1 thread": lambda: scan(1),
            f"scan, reduce on {args.threads} threads": lambda: scan(args.threads),
            "scan, Workspace chooses": lambda: scan(0)}
    if args.threads == 1:  # nothing to choose between
        del ways["scan, reduce on 1 threads"], ways["scan, Workspace chooses"]
    for f in ways.values():
        f()
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in ways}
    for _ in range(4):
        for name, f in ways.items():
            spent[0], large[0], large[1] = 0.0, 0.0, 0
            start, start_cpu = time.perf_counter(), time.process_time()
            f()
            results[name].append((time.perf_counter() - start, time.process_time() - start_cpu, spent[0],
                                  large[0] / max(1, large[1]) * 1e9))
    wall0, cpu0 = (min(r[i] for r in results["bare"]) for i in (0, 1))
    kind = "TorchScript" if args.torchscript else "pt2" if args.pt2 else "eager"
    print(f"MobileNetV2 ({kind}), {SAMPLES} samples, batch {BATCH}, torch on {args.threads} threads; best of 4\n")
    print("| run | wall s | / bare | CPU / bare | updates s | ns per entry, large activations |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, rs in results.items():
        wall, cpu, updates, per_entry = (min(r[i] for r in rs) for i in range(4))
        extra = " | " if name == "bare" or not per_entry else f"{updates:.3f} | {per_entry:.3f}"
        print(f"| {name} | {wall:.3f} | {wall / wall0:.3f} | {cpu / cpu0:.3f} | {extra} |")


if __name__ == "__main__":
    main()
