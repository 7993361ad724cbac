"""A road the ONNX scan does not take, measured: every ReLU6 output returned by
onnxruntime into preallocated buffers (IOBinding) and reduced by the torch scan's compiled
pass (backends/fused_rows.py), against bare inference. MobileNetV2, 128 samples.

    .venv/bin/python benchmarks/onnx_raw_outputs.py [--batch 32] [--threads 1]

Prints process CPU seconds, best of 4 interleaved runs, and the ratio to bare:
  bare         onnxruntime on the exported model;
  raw only     the same model with every Clip/Relu output made a graph output, written into
               buffers bound once (no allocation per run);
  raw+fused    that, plus the one-pass reduction of every output.
On 2026-11-30 (one thread, load 0.6-0.8, three runs at batch 32 and 2): raw only 1.33-1.44x,
raw+fused 1.48-1.65x, against about 1.5 for the scan's in-graph reductions on one thread:
returning the activations makes onnxruntime reorder each out of its blocked layout, which
costs as much as the reductions it would replace.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

from relu_doctor.backends.fused_rows import row_stats  # noqa: E402

SAMPLES = 128


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilenet_v2.onnx"
        bench_models.export_onnx(bench_models.build("mobilenet_v2"), str(path), torch.randn(2, 3, 224, 224))
        model, tapped = onnx.load(str(path)), onnx.load(str(path))
    sites = [n.output[0] for n in model.graph.node if n.op_type in ("Clip", "Relu")]
    for name in sites:
        tapped.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    bare_session, tapped_session = session(model, args.threads), session(tapped, args.threads)
    input_name = bare_session.get_inputs()[0].name
    data = np.random.default_rng(0).standard_normal((SAMPLES, 3, 224, 224)).astype(np.float32)
    first = tapped_session.run(sites, {input_name: data[: args.batch]})
    buffers = {name: np.empty_like(a) for name, a in zip(sites, first)}
    binding = tapped_session.io_binding()
    for name, buf in buffers.items():
        binding.bind_output(name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
    binding.bind_output(tapped_session.get_outputs()[0].name, "cpu")

    def bare() -> None:
        for i in range(0, SAMPLES, args.batch):
            bare_session.run(None, {input_name: data[i: i + args.batch]})

    def raw(reduce: bool) -> None:
        for i in range(0, SAMPLES, args.batch):
            binding.bind_cpu_input(input_name, data[i: i + args.batch])
            tapped_session.run_with_iobinding(binding)
            if reduce:
                for y in buffers.values():
                    row_stats(y.reshape(y.shape[0], y.shape[1], -1), 2, signed=False)

    ways = {"bare": bare, "raw only": lambda: raw(False), "raw+fused": lambda: raw(True)}
    for f in ways.values():  # warm-up
        f()
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(4):
        for name, f in ways.items():
            start = cpu()
            f()
            seconds[name].append(cpu() - start)
    base = min(seconds["bare"])
    print(f"MobileNetV2, {SAMPLES} samples, batch {args.batch}, {args.threads} thread(s); CPU s, best of 4")
    for name, s in seconds.items():
        print(f"  {name:<10} {min(s):.3f}  ({min(s) / base:.2f} x bare)")


if __name__ == "__main__":
    main()
