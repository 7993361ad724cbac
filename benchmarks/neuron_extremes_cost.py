"""What `neuron_extremes=True` (what `--neurons` asks for) adds to a scan, run by hand (not in CI).

    .venv/bin/python benchmarks/neuron_extremes_cost.py [--model resnet18|mobilenet_v2|mlp] [--reps 5]

One intra-op thread; interleaved repetitions of the same scan without and with the option,
for the eager module and the ONNX export; medians of process CPU time (less disturbed by
other processes on a shared machine than wall time) and of wall time, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import torch
    from bench_models import build, export_onnx, input_shape

    import relu_doctor as rd

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--res", type=int, default=112)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = build(args.model).eval()
    shape = input_shape(args.model, args.res)
    data = np.random.default_rng(0).standard_normal((args.samples, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = str(Path(tmp) / "m.onnx")
        export_onnx(model, onnx_path, torch.from_numpy(data[:2]))
        targets = {"module": lambda: model, "onnx": lambda: onnx_path}
        print(f"{args.model}, {args.samples} samples of {shape}, batch {args.batch}, 1 thread; "
              f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print("| format | option | CPU s (median) | wall s (median) | CPU cost of the option |")
        print("|---|---|---|---|---|")
        for fmt, target in targets.items():
            times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for rep in range(args.reps + 1):
                for extremes in (False, True) if rep % 2 else (True, False):
                    c0, w0 = time.process_time(), time.perf_counter()
                    rd.scan(target(), data, batch_size=args.batch, neuron_extremes=extremes, warn=False,
                            device="cpu")
                    if rep:  # the first round warms up
                        times[extremes].append((time.process_time() - c0, time.perf_counter() - w0))
            med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
                   for k, v in times.items()}
            for extremes in (False, True):
                cost = "" if not extremes else f"{(med[True][0] / med[False][0] - 1) * 100:+.1f}%"
                print(f"| {fmt} | {'neuron_extremes' if extremes else 'default'} | {med[extremes][0]:.3f} | "
                      f"{med[extremes][1]:.3f} | {cost} |")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
