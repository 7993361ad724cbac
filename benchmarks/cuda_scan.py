"""Issue 19's GPU part: scan / bare inference of ResNet-18 at batch 256 on a CUDA device.

    python benchmarks/cuda_scan.py [--model resnet18] [--batch 256] [--batches 4] [--reps 5]
        [--device cuda]

Both sides start from the same host arrays (numpy, as a scan's sample is) and end when
the device is idle: bare inference copies each batch to the device, runs the model under
inference_mode and synchronizes; the scan is `relu_doctor.scan(model, data, batch_size=,
device=)`, set-up included. Runs alternate (bare, scan, bare, scan ...) after one untimed
run of each (CUDA context, cuDNN's algorithm choice, relu-doctor's imports); the medians
are printed with their ratio and the peak device memory of each. `--device cpu` runs the
same comparison on the host (a check of the script itself without a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_models import build, input_shape  # noqa: E402

import relu_doctor  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare(model: torch.nn.Module, data: np.ndarray, batch: int, device: torch.device) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for start in range(0, len(data), batch):
                model(torch.from_numpy(data[start:start + batch]).to(device))
        _sync(device)

    return run


def _scan(model: torch.nn.Module, data: np.ndarray, batch: int, device: torch.device) -> Callable[[], None]:
    def run() -> None:
        relu_doctor.scan(model, data, batch_size=batch, device=str(device), warn=False)
        _sync(device)

    return run


def _timed(run: Callable[[], None], device: torch.device) -> tuple[float, int]:
    """Seconds of one run and the device memory it peaked at (bytes; 0 on the host)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return seconds, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "mobilenet_v2"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--if-available", action="store_true", help="without a CUDA device, say so and exit 0")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        message = "no CUDA device here (torch.cuda.is_available() is False); --device cpu checks the script"
        if args.if_available:
            print(message)
            return
        sys.exit(message)
    data = np.random.default_rng(0).standard_normal((args.batch * args.batches, *input_shape(args.model)),
                                                    dtype=np.float32)
    model = build(args.model).to(device)
    runs = {"bare": _bare(model, data, args.batch, device), "scan": _scan(model, data, args.batch, device)}
    for run in runs.values():  # warm-up, untimed
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    peak: dict[str, int] = dict.fromkeys(runs, 0)
    for _ in range(args.reps):
        for name, run in runs.items():
            s, p = _timed(run, device)
            seconds[name].append(s)
            peak[name] = max(peak[name], p)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "host CPU"
    print(f"{args.model}, {len(data)} samples in batches of {args.batch}, {name}, torch {torch.__version__}, "
          f"{args.reps} interleaved runs (median, min)")
    for key in runs:
        print(f"{key:<5} {statistics.median(seconds[key]):8.3f} s  {min(seconds[key]):8.3f} s"
              f"  peak device memory {peak[key] / 2**20:8.0f} MiB")
    ratio = statistics.median(seconds["scan"]) / statistics.median(seconds["bare"])
    print(f"scan / bare: {ratio:.3f} (best of each: {min(seconds['scan']) / min(seconds['bare']):.3f})")


if __name__ == "__main__":
    main()
