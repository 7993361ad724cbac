"""What an ONNX scan costs: relu-doctor's capture against bare onnxruntime inference and the
naive capture (every activation a graph output, reduced in numpy).

    .venv/bin/python benchmarks/onnx_overhead.py [--model resnet18|mobilenet_v2|mlp]
        [--samples 256] [--batch-size 32] [--repeats 5] [--threads N]

The model comes from benchmarks/bench_models.py (built in code, random weights, no
downloads) and is exported with the TorchScript-based exporter. Three ways run the same
batches, interleaved (the order rotates each repetition):

- bare:        create the session, session.run over the batches (the model as is);
- relu-doctor: relu_doctor.backends.onnx.capture(), end to end: finding the sites, shape
               inference, instrumenting, creating the session, running, accumulating;
- naive:       create a session whose outputs include every site's output, run, reduce
               them in numpy to the same counters (fires, per-sample fires, sum |y| in
               float64, max);

and the same three with their sessions built beforehand ("runs"): the per-batch cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from bench_models import MODELS, build, export_onnx, input_shape  # noqa: E402

from relu_doctor.backends import onnx as backend  # noqa: E402
from relu_doctor.backends.onnx_counters import SiteAccumulator  # noqa: E402
from relu_doctor.backends.onnx_graph import find_sites  # noqa: E402
from relu_doctor.backends.onnx_instrument import instrument, plan_sites  # noqa: E402
from relu_doctor.backends.onnx_session import make_session  # noqa: E402
from relu_doctor.backends.onnx_shapes import static_shapes  # noqa: E402
from relu_doctor.inputs import InputSpec, Sample  # noqa: E402


def naive_reduce(y: np.ndarray, axis: int) -> tuple:
    """The counters relu-doctor keeps, from the full activation, along the same neuron axis."""
    y3 = np.moveaxis(y, axis, -1).reshape(y.shape[0], -1, y.shape[axis]) if axis != 1 else \
        y.reshape(y.shape[0], y.shape[1], -1).swapaxes(1, 2)
    positives = (y3 > 0).sum(1)
    return positives.sum(0), (positives > 0).sum(0), np.abs(y3).sum(1, dtype=np.float64).sum(0), y3.max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="resnet18")
    parser.add_argument("--samples", type=int, default=256)  # relu-doctor's defaults
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads for all three (default: onnxruntime's, one per core)")
    args = parser.parse_args()

    import torch  # only to build and export the model

    shape = input_shape(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(build(args.model), str(path), torch.randn(1, *shape))
        proto = onnx.load(str(path))
    x = np.random.default_rng(0).standard_normal((args.samples, *shape), np.float32)
    batches = [x[i:i + args.batch_size] for i in range(0, len(x), args.batch_size)]
    specs = [InputSpec("input", shape)]
    sample = Sample(source="array", specs=specs, count=len(x), arrays=[x])
    providers = backend.resolve_device("cpu")
    model = backend.prepare(proto, providers)
    model.threads = args.threads
    threads = args.threads

    def plain_session(m: onnx.ModelProto) -> ort.InferenceSession:
        """What a user runs: onnxruntime's default options (relu-doctor's order tuning left out)."""
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        return ort.InferenceSession(m.SerializeToString(), options, providers=providers)

    bare_session = plain_session(proto)
    sites = find_sites(proto).sites
    tapped = onnx.ModelProto()
    tapped.CopyFrom(proto)
    tapped.graph.output.extend(onnx.ValueInfoProto(name=s.output) for s in sites)
    naive_session = plain_session(tapped)
    plans, _ = plan_sites(sites, static_shapes(proto, {"input": [args.batch_size, *specs[0].shape]}), "auto")
    instrumented = make_session(instrument(proto, plans), providers, threads)
    fetch = [n for p in plans for n in p.outputs.values()]

    names = [s.output for s in sites]
    axes = [p.axis for p in plans]

    def bare_runs(session: object = None) -> None:
        session = session or bare_session
        for b in batches:
            session.run(None, {"input": b})  # type: ignore[attr-defined]

    def capture_runs() -> None:
        accs = [SiteAccumulator(p, "auto") for p in plans]
        for b in batches:
            out = dict(zip(fetch, instrumented.run(fetch, {"input": b})))
            for acc in accs:
                acc.add({role: out[name] for role, name in acc.plan.outputs.items()}, len(b), len(b))

    def naive_runs(session: object = None) -> None:
        session = session or naive_session
        for b in batches:
            for y, axis in zip(session.run(names, {"input": b}), axes):  # type: ignore[attr-defined]
                naive_reduce(y, axis)

    ways: dict[str, Callable[[], None]] = {
        "bare": lambda: bare_runs(plain_session(proto)),
        "relu-doctor": lambda: backend.capture(model, sample, args.batch_size),
        "naive": lambda: naive_runs(plain_session(tapped)),
        "bare runs": bare_runs,
        "relu-doctor runs": capture_runs,
        "naive runs": naive_runs,
    }
    for way in ways.values():  # warm-up: first runs allocate the arenas
        way()
    times: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    order = list(ways)
    for r in range(args.repeats):
        for name in order[r % len(order):] + order[: r % len(order)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            ways[name]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    act_bytes = sum(y.nbytes for y in naive_session.run(names, {"input": batches[0]}))
    out_bytes = sum(a.nbytes for a in instrumented.run(fetch, {"input": batches[0]}))
    print(f"{args.model} {'x'.join(map(str, shape))}, {len(sites)} ReLU sites, {args.samples} samples in batches "
          f"of {args.batch_size}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, median of {args.repeats}")
    # Wall time is what a user waits; on a shared machine the minimum of the repetitions is
    # the least disturbed one, and CPU time (with one thread, nothing spins) barely moves.
    print(f"{'':<18}{'median s':>9}{'ratio':>7}{'min s':>8}{'ratio':>7}{'cpu s':>8}{'ratio':>7}")
    for name, ts in times.items():
        ref = "bare runs" if name.endswith("runs") else "bare"
        row = [(statistics.median(ts), statistics.median(times[ref])), (min(ts), min(times[ref])),
               (statistics.median(cpu[name]), statistics.median(cpu[ref]))]
        print(f"{name:<18}" + "".join(f"{v:>{9 if i == 0 else 8}.3f}{v / b:>7.3f}" for i, (v, b) in enumerate(row)))
    print(f"bytes returned per batch: relu-doctor {out_bytes / 1e3:.0f} kB, naive {act_bytes / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
