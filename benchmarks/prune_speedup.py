"""Inference time before and after `relu-doctor prune`, on models with 30% planted dead channels.

    .venv/bin/python benchmarks/prune_speedup.py [--reps 20] [--batch 64]

Models from tests/prune_models.py (random weights, 30% of the hidden channels planted
dead: BatchNorm weight 0 / Linear row 0, bias -1, so provably dead): a ResNet-style CNN
with residual blocks (only the middle activation of each block is prunable; the stem is
tied to the residual adds and is left alone) and a wide MLP. Each is pruned with the
library's `prune_file` as a pickled module and as ONNX, then the original and the pruned
model run interleaved on one thread; the figure is the fastest of --reps runs in process
CPU time (other jobs on a shared machine add wall time, not this process's CPU time).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relu_doctor.patching import ScanOptions  # noqa: E402
from relu_doctor.patching.prune_run import prune_file  # noqa: E402
from tests.prune_models import build_resnet_style, build_wide_mlp  # noqa: E402

MODELS = {
    "resnet_style (64 wide, 4 blocks of 64->128->64)": (lambda: build_resnet_style(64, 128, 4), (3, 32, 32)),
    "mlp (512-2048-2048-10)": (lambda: build_wide_mlp((512, 2048, 2048, 10)), (512,)),
}


def _save(model: torch.nn.Module, shape: tuple[int, ...], folder: Path, name: str) -> dict[str, Path]:
    example = torch.randn(2, *shape)
    paths = {"module": folder / f"{name}.pt", "onnx": folder / f"{name}.onnx"}
    torch.save(model, paths["module"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(paths["onnx"]), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "b"}, "output": {0: "b"}},
                          opset_version=17)
    return paths


def _runner(path: Path) -> object:
    if path.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})
    model = torch.load(path, weights_only=False).eval()

    def run(x: np.ndarray) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run


def _time(runs: list, x: np.ndarray, reps: int) -> list[float]:
    best = [float("inf")] * len(runs)
    for r in range(reps + 1):
        for i, run in enumerate(runs):
            start = time.process_time()
            run(x)
            spent = time.process_time() - start
            if r:
                best[i] = min(best[i], spent)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; batch {args.batch}; fastest of {args.reps} runs, "
          f"process CPU time; load average at start {os.getloadavg()[0]:.1f}\n")
    print("| model | format | removed | weights | FLOPs / input | file bytes | max rel. change | "
          "original ms | pruned ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (name, (build, shape)) in enumerate(MODELS.items()):
            paths = _save(build(), shape, folder, f"m{i}")
            x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
            for fmt, src in paths.items():
                out = folder / f"m{i}.pruned{src.suffix}"
                o = prune_file(src, out, options=ScanOptions(input_shape=shape, samples=16, trust_pickle=True))
                assert o.check is not None
                before, after = _time([_runner(src), _runner(out)], x, args.reps)
                change = "0 (bit-identical)" if o.check.bit_identical else f"{o.check.relative_change:.1e}"
                left = sum(a.neurons for a in o.plan.left_alone)
                total = sum(g.total for g in o.plan.groups)
                print(f"| {name} | {fmt} | {o.plan.neurons} of {total}, {left} left alone | "
                      f"{o.weights_before:,} -> {o.weights_after:,} | "
                      f"{2 * o.macs_before:,} -> {2 * o.macs_after:,} | {o.bytes_before:,} -> {o.bytes_after:,} | "
                      f"{change} | {before * 1e3:.1f} | {after * 1e3:.1f} | **x{before / after:.2f}** |", flush=True)


if __name__ == "__main__":
    main()
