"""Where an ONNX scan's time goes: onnxruntime's own per-node profile, bare against instrumented.

    .venv/bin/python benchmarks/onnx_profile.py resnet18|mobilenet_v2|mlp [BATCH]

Exports the model (bench_models.py) to a temporary folder, builds relu-doctor's
instrumented graph, runs 4 batches of BATCH (default 32; the scan of a memory-bound graph
runs sub-batches of 2, backends/onnx_chunks.py) on 1 and 2 intra-op threads with
onnxruntime's profiler on, and prints the kernel time per batch: of all nodes, and of the
reduction nodes relu-doctor added, by op type.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench_models  # noqa: E402

from relu_doctor.backends.onnx_graph import find_sites  # noqa: E402
from relu_doctor.backends.onnx_instrument import instrument, plan_sites  # noqa: E402
from relu_doctor.backends.onnx_shapes import static_shapes  # noqa: E402

RUNS = 4
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 32


def kernel_ms(model: onnx.ModelProto, threads: int, x: np.ndarray, prefix: str, ordered: bool) -> tuple[float, dict]:
    """Kernel milliseconds per batch: all nodes, and relu-doctor's nodes by op type."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    if ordered:  # as relu-doctor runs it (backends/onnx_session.make_session)
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(RUNS):
        session.run(None, {"input": x})
    trace = Path(session.end_profiling())
    events = [e for e in json.loads(trace.read_text())
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    trace.unlink()
    ours: dict[str, float] = {}
    for e in events:
        if "relu_doctor" in e["name"]:
            op = e["args"]["op_name"]
            ours[op] = ours.get(op, 0.0) + e["dur"] / RUNS / 1e3
    return sum(e["dur"] for e in events) / RUNS / 1e3, ours


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    with tempfile.TemporaryDirectory(prefix="relu-doctor-profile-") as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        shape = bench_models.input_shape(name)
        bench_models.export_onnx(bench_models.build(name), path, torch.zeros(BATCH, *shape))
        model = onnx.load(path)
        plans, _ = plan_sites(find_sites(model, False).sites, static_shapes(model, {"input": [BATCH, *shape]}),
                              "auto")
        instrumented = instrument(model, plans)
        x = np.random.default_rng(0).standard_normal((BATCH, *shape)).astype(np.float32)
        for threads in (1, 2):
            for label, m in (("bare", model), ("instrumented", instrumented)):
                total, ours = kernel_ms(m, threads, x, os.path.join(tmp, label), label == "instrumented")
                detail = ", ".join(f"{op} {ms:.1f}" for op, ms in sorted(ours.items(), key=lambda kv: -kv[1]))
                print(f"{name} {threads} thread(s) {label:12s}: kernels {total:7.1f} ms per batch; "
                      f"relu-doctor's reductions {sum(ours.values()):6.1f} ms {detail}")


if __name__ == "__main__":
    main()
