"""What `relu-doctor patch` costs against its parts: one scan plus one export (issue 19's
target: patch <= 3 x (scan + one export)).

    .venv/bin/python benchmarks/patch_time.py [--model resnet18] [--samples 64] [--threads 1]
        [--cases pt2,state-dict-onnx]

The model (bench_models.py, random weights) gets planted dead channels (the stem's first
8 BatchNorm channels: weight 0, bias -1), so there is something to patch. Cases:

- pt2:             patch a .pt2 into a .pt2 (scan, rewrite of ep.module(), one export,
                   write, reload, verify, rescan);
- state-dict-onnx: patch a state dict (--arch bench_models:build) into ONNX.

For each case, in this process and in this order: the scan alone (relu_doctor.scan of the
same file and sample, after one untimed scan that pays the process's first-use costs), the
export alone (torch.export + save of the eager model, or the TorchScript-based ONNX
export), then `patching.run.patch_file` end to end. Figures are
process CPU time (torch and onnxruntime on --threads threads), which other processes on a
shared machine disturb less than wall time; wall time is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import torch  # noqa: E402
from bench_models import build, export_onnx, input_shape  # noqa: E402

import relu_doctor  # noqa: E402
from relu_doctor.patching.run import ScanOptions, patch_file  # noqa: E402


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.process_time() - start_cpu, time.perf_counter() - start


def _export_pt2(model: torch.nn.Module, example: torch.Tensor, batch: object, path: Path) -> None:
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(path))


def _planted(name: str) -> torch.nn.Module:
    model = build(name)
    with torch.no_grad():
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.weight[:8] = 0
        bn.bias[:8] = -1
    return model


def _onnxruntime_threads(threads: int) -> None:
    """onnxruntime ignores OMP_NUM_THREADS and relu-doctor leaves its thread count to it (one
    per core): every session patch makes is given `threads`, as the docstring says, so their
    CPU time is not that of threads spinning on a shared machine. All sessions are made in
    onnx_session._new_session (make_session and session_from_bytes both call it)."""
    from relu_doctor.backends import onnx_session

    new_session = onnx_session._new_session

    def pinned(model: object, providers: list, n: int | None, options: object) -> object:
        return new_session(model, providers, n or threads, options)

    onnx_session._new_session = pinned  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", choices=["resnet18", "mobilenet_v2"])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="pt2,state-dict-onnx")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _onnxruntime_threads(args.threads)
    shape = input_shape(args.model)
    model = _planted(args.model)
    example = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=1024)
    opts = dict(input_shape=",".join(map(str, shape)), samples=args.samples)
    print(f"{args.model}, {args.samples} synthetic samples in batches of 32, {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
    print(f"{'case':<18}{'scan cpu s':>11}{'export cpu s':>13}{'patch cpu s':>12}{'patch/(scan+export)':>21}"
          f"{'patch wall s':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            if case == "pt2":
                src = Path(tmp) / "m.pt2"
                _export_pt2(model, example, batch, src)
                out = Path(tmp) / "out.pt2"
                relu_doctor.scan(str(src), warn=False, **opts)  # warm-up: imports, kernels, first-run costs
                scan_cpu, _ = _timed(relu_doctor.scan, str(src), warn=False, **opts)
                export_cpu, _ = _timed(_export_pt2, model, example, batch, Path(tmp) / "e.pt2")
                options = ScanOptions(input_shape=opts["input_shape"], samples=args.samples)
            else:
                src = Path(tmp) / "m.pth"
                torch.save(model.state_dict(), str(src))
                out = Path(tmp) / "out.onnx"
                arch, kwargs = "bench_models:build", {"name": args.model}
                relu_doctor.scan(str(src), arch=arch, arch_kwargs=kwargs, warn=False, **opts)  # warm-up
                scan_cpu, _ = _timed(relu_doctor.scan, str(src), arch=arch, arch_kwargs=kwargs, warn=False, **opts)
                export_cpu, _ = _timed(export_onnx, model, str(Path(tmp) / "e.onnx"), example)
                options = ScanOptions(input_shape=opts["input_shape"], samples=args.samples, arch=arch,
                                      arch_kwargs=kwargs)
            patch_cpu, patch_wall = _timed(patch_file, src, out, options=options, force=True)
            print(f"{case:<18}{scan_cpu:>11.1f}{export_cpu:>13.1f}{patch_cpu:>12.1f}"
                  f"{patch_cpu / (scan_cpu + export_cpu):>21.2f}{patch_wall:>13.1f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
