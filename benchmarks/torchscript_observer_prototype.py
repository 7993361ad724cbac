"""A prototype, not relu-doctor's capture: what a TorchScript scan would cost without a
dispatch mode. The scan does this since the fifth session (backends/torch_replay.py); kept
as the measurement that led there.

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python benchmarks/torchscript_observer_prototype.py [--threads 1]

A custom op (torch.library, with a Python kernel that runs the scan's fused reduction) is
inserted after each ReLU6 node of MobileNetV2's traced graphs. The module is then saved
and loaded again: graphs a module has already run are cached as optimized copies, which
the edit would not reach. It runs plainly, with no dispatch mode. Compared with the same
traced model, bare, 128 samples at batch 32, best of 5 interleaved runs. The op declares
that it mutates its input, because TorchScript drops an op without outputs or effects as
dead code.

A real capture needs more than this: every activation kind and its parameters read from
the graph's constants, the neuron axis (the dispatch mode follows it op by op),
hand-written hard-swish, fused kernels, and site names (GraphOrigins).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402

from relu_doctor.backends import fused_rows  # noqa: E402

SAMPLES, BATCH = 128, 32
_reducing = [False]
_sites: dict[int, tuple[np.ndarray, ...]] = {}


@torch.library.custom_op("relu_doctor_prototype::observe", mutates_args=("y",))
def observe(y: torch.Tensor, site: int) -> None:
    if not _reducing[0]:
        return
    values = y.detach().numpy().reshape(y.shape[0], y.shape[1], -1)
    rows = fused_rows.row_stats(values, 2, signed=False, threads=torch.get_num_threads())
    totals = _sites.get(site)
    if totals is None:
        c = y.shape[1]
        totals = _sites[site] = (np.zeros(c, np.int64), np.zeros(c, np.int64), np.zeros(c), np.full(c, np.inf),
                                 np.full(c, -np.inf))
    fused_rows.fold(rows, values.dtype, *totals)


def observed(traced: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, int]:
    """A copy of `traced` with observe(y, site) after every hardtanh_ of its ReLU6 modules."""
    site = 0
    for _, module in traced.named_modules():
        if module.original_name != "ReLU6":
            continue
        graph = module.graph
        for node in list(graph.nodes()):
            if node.kind() == "aten::hardtanh_":
                index = graph.insertConstant(site)
                call = graph.create("relu_doctor_prototype::observe", [node.output(), index], 0)
                call.insertAfter(node)
                index.node().moveBefore(call)
                site += 1
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer), site


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    model = bench_models.build("mobilenet_v2").eval()
    example = torch.randn(2, 3, 224, 224)
    bare_model = torch.jit.trace(model, example)
    with_ops, sites = observed(torch.jit.trace(model, example))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((SAMPLES, 3, 224, 224)).astype(np.float32))

    def run(m: torch.jit.ScriptModule, reducing: bool = False) -> None:
        _reducing[0] = reducing
        with torch.inference_mode():
            for i in range(0, SAMPLES, BATCH):
                m(x[i: i + BATCH])
        _reducing[0] = False

    ways: dict[str, Callable[[], None]] = {
        "TorchScript, bare": lambda: run(bare_model),
        "with the observe ops, reduction off": lambda: run(with_ops),
        "with the observe ops and the reduction": lambda: run(with_ops, reducing=True)}
    for _ in range(3):  # warm-up: the profiling executor optimizes after a few runs
        for f in ways.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(5):
        for name, f in ways.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    _sites.clear()
    run(with_ops, reducing=True)
    print(f"MobileNetV2 TorchScript, {SAMPLES} samples, batch {BATCH}, {args.threads} thread(s); {sites} observe ops "
          f"inserted, {len(_sites)} reached at run time; best of 5\n")
    print("| run | wall s | / bare |\n|---|---:|---:|")
    bare = min(times["TorchScript, bare"])
    for name, t in times.items():
        print(f"| {name} | {min(t):.3f} | {min(t) / bare:.3f} |")


if __name__ == "__main__":
    main()
