"""What a relu-doctor scan costs on top of the model, run by hand (not in CI).

    .venv/bin/python benchmarks/scan_overhead.py            # everything: 20 minutes or more on 2 cores
    .venv/bin/python benchmarks/scan_overhead.py --quick    # small inputs, 3 repetitions: a smoke run

For each model (bench_models.py: ResNet-18, MobileNetV2 with ReLU6, a transformer-style
MLP) in each format (eager module, TorchScript, .pt2, ONNX), interleaved repetitions of
  bare   inference over the same batches (torch.inference_mode on the loaded module;
         onnxruntime from the file, session creation included, since the scan is given
         the path and loads it too),
  scan   relu_doctor.scan(model, data=..., batch_size=...) through the Python API,
  naive  forward hooks (graph formats: a dispatch mode; ONNX: every activation made a graph
         output) that copy each activation to numpy, reduced with numpy after each batch,
and the medians of wall time (and of process CPU time, which other processes on a shared
machine disturb less). Then the peak RSS of scans and of bare inference over N and 10N
samples, each in a fresh process, and the CLI's start-up and end-to-end times. Prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

FORMATS = ("eager", "torchscript", "pt2", "onnx")
TARGET = {"eager": 1.10, "onnx": 1.10, "torchscript": 1.30, "pt2": 1.30}  # scan / bare
# glibc hands every block over 32 MiB back to the OS when it is freed, and trims the heap
# top, so a model's large activations fault in fresh pages on every batch: MobileNetV2 at
# batch 32 x 224x224 spends more than half its bare time in page faults (1.08 million a
# 64-sample pass), and how many depends on the heap's history (the naive run before it
# halves them). The timing runs keep freed memory instead, so that they measure compute;
# --system-malloc measures with glibc's defaults. Memory and start-up run with the defaults.
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}
# By default glibc raises its mmap threshold each time a large block is freed, and later
# blocks of that size come from a heap that fragments: the peak RSS of the same run moves
# by +-15% with the heap's history (an MLP scan of 64, 320, 640, 1280, 2560 samples peaked
# at 355, 410, 394, 470, 428 MiB). A fixed threshold (its default starting value) gives
# every large tensor a mapping of its own, so the peak is the memory the run really holds
# (328 MiB for each of those five). The memory runs use it.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
NAIVE_TARGET = 1.5  # naive / scan, on the CNNs


# ---- models in every format ----------------------------------------------------------------


def build_formats(name: str, example: np.ndarray, formats: list[str], tmp: Path) -> dict[str, object]:
    """The model as each format: the object relu_doctor.scan takes (a path for ONNX)."""
    import bench_models
    import torch

    module = bench_models.build(name)
    x = torch.from_numpy(example)
    out: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "eager" in formats:
            out["eager"] = module
        if "torchscript" in formats:
            with torch.no_grad():
                out["torchscript"] = torch.jit.trace(bench_models.build(name), x)
        if "pt2" in formats:
            out["pt2"] = torch.export.export(bench_models.build(name), (x,))  # static batch: the scan's batch
        if "onnx" in formats:
            path = tmp / f"{name}.onnx"
            bench_models.export_onnx(bench_models.build(name), str(path), x)
            out["onnx"] = str(path)
    return out


# ---- the three ways to run a sample ----------------------------------------------------------


def bare_runner(fmt: str, model: object, batches: list[np.ndarray], threads: int) -> Callable[[], None]:
    if fmt == "onnx":
        # From the file, as the scan starts: the session's creation is part of bare inference
        def run_onnx() -> None:
            sess = _ort_session(str(model), threads)
            name = sess.get_inputs()[0].name
            for b in batches:
                sess.run(None, {name: b})

        return run_onnx
    import torch

    forward = model.module() if fmt == "pt2" else model  # type: ignore[union-attr]

    def run_torch() -> None:
        with torch.inference_mode():
            for b in batches:
                forward(torch.from_numpy(b))

    return run_torch


def scan_runner(fmt: str, model: object, data: np.ndarray, batch: int) -> Callable[[], None]:
    import relu_doctor

    def run() -> None:
        relu_doctor.scan(model, data=data, batch_size=batch)

    return run


def naive_runner(fmt: str, model: object, batches: list[np.ndarray], threads: int) -> Callable[[], None]:
    """Copy every activation to numpy during the pass, reduce them all afterwards."""
    if fmt == "onnx":
        def run_onnx() -> None:
            sess, names = _ort_session_with_activations(str(model), threads)
            input_name = sess.get_inputs()[0].name
            totals: dict[int, dict] = {}
            for b in batches:
                _naive_reduce(dict(enumerate(sess.run(names, {input_name: b}))), totals)

        return run_onnx
    import torch

    forward = model.module() if fmt == "pt2" else model  # type: ignore[union-attr]

    def run_torch() -> None:
        totals: dict[int, dict] = {}
        kept: dict[int, np.ndarray] = {}

        def keep(y: torch.Tensor) -> None:
            kept[len(kept)] = y.detach().cpu().numpy().copy()

        with torch.inference_mode(), _activation_copier(fmt, forward, keep):
            for b in batches:
                forward(torch.from_numpy(b))
                _naive_reduce(kept, totals)
                kept.clear()

    return run_torch


class _activation_copier:  # noqa: N801 - a context manager
    """Eager: forward hooks on the activation modules. Graph formats have no modules to hook,
    so the same copy happens in a minimal TorchDispatchMode on the activation ops."""

    ACT_MODULES = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "Hardtanh")
    ACT_OPS = frozenset({"relu", "relu_", "clamp", "clamp_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_"})

    def __init__(self, fmt: str, forward: object, keep: Callable) -> None:
        self.fmt, self.forward, self.keep, self.handles, self.mode = fmt, forward, keep, [], None

    def __enter__(self) -> _activation_copier:
        if self.fmt == "eager":
            for m in self.forward.modules():  # type: ignore[attr-defined]
                if type(m).__name__ in self.ACT_MODULES:
                    self.handles.append(m.register_forward_hook(lambda mod, args, out: self.keep(out)))
        else:
            self.mode = _copy_mode(self.ACT_OPS, self.keep)
            self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        if self.mode is not None:
            self.mode.__exit__(*exc)


def _copy_mode(ops: frozenset, keep: Callable) -> object:
    from torch.utils._python_dispatch import TorchDispatchMode

    class CopyMode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket.__name__ in ops:
                keep(out)
            return out

    return CopyMode()


def _naive_reduce(batch: dict[int, np.ndarray], totals: dict[int, dict]) -> None:
    """SPEC 4 straight on one batch's kept activations (channel axis for 4-D, last axis for
    3-D), added into running totals, so memory stays bounded as in the scan."""
    for site, y in batch.items():
        axis = 1 if y.ndim == 4 else y.ndim - 1
        m = np.moveaxis(y, axis, -1).reshape(y.shape[0], -1, y.shape[axis])  # (N, positions, C)
        positive = m > 0
        part = {"fires": positive.sum((0, 1)), "sample_fires": positive.any(1).sum(0),
                "abs_sum": np.abs(m).sum((0, 1), dtype=np.float64), "min": m.min((0, 1)), "max": m.max(),
                "nonfinite": (~np.isfinite(m)).sum()}
        t = totals.get(site)
        if t is None:
            totals[site] = part
            continue
        for k in ("fires", "sample_fires", "abs_sum", "nonfinite"):
            t[k] = t[k] + part[k]
        t["min"], t["max"] = np.minimum(t["min"], part["min"]), max(t["max"], part["max"])


def _ort_session(path: str, threads: int, model_bytes: bytes | None = None) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes or path, options, providers=["CPUExecutionProvider"])


def _ort_session_with_activations(path: str, threads: int) -> tuple[object, list[str]]:
    import onnx

    model = onnx.load(path)
    outputs = {o.name for o in model.graph.output}
    names = [n.output[0] for n in model.graph.node
             if n.op_type in ("Relu", "Clip", "LeakyRelu", "PRelu") and n.output[0] not in outputs]
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return _ort_session(path, threads, model.SerializeToString()), names


# ---- measuring ------------------------------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def interleaved(runs: dict[str, Callable[[], None]], reps: int) -> dict[str, dict[str, float]]:
    """Warm each up, then `reps` rounds, each running every method once (order rotating)."""
    for f in runs.values():
        f()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for rep in range(reps):
        for k in names[rep % len(names):] + names[: rep % len(names)]:
            w, c = time.perf_counter(), _cpu()
            runs[k]()
            wall[k].append(time.perf_counter() - w)
            cpu[k].append(_cpu() - c)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k]),
                "wall_all": [round(v, 4) for v in wall[k]]} for k in runs}


def overhead(args: argparse.Namespace) -> list[dict]:
    import bench_models
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="relu-doctor-bench-") as tmp:
        for name in args.models:
            shape = bench_models.input_shape(name, args.res, args.tokens)
            data = np.random.default_rng(0).standard_normal((args.samples, *shape)).astype(np.float32)
            batches = [data[i: i + args.batch] for i in range(0, args.samples, args.batch)]
            models = build_formats(name, data[: args.batch], args.formats, Path(tmp))
            for threads in args.threads:
                torch.set_num_threads(threads)
                for fmt in args.formats:
                    base = {"model": name, "format": fmt, "threads": threads, "input": list(shape)}
                    if fmt == "onnx" and threads != os.cpu_count():
                        # the ONNX scan runs onnxruntime with its default threads (one per core)
                        rows.append({**base, "skipped": "n/a: the ONNX scan uses one thread per core"})
                        continue
                    rows.append(_measure(args, base, models[fmt], data, batches, threads))
            del models
    return rows


def _measure(args: argparse.Namespace, base: dict, model: object, data: np.ndarray, batches: list[np.ndarray],
             threads: int) -> dict:
    fmt = base["format"]
    runners = {"bare": lambda: bare_runner(fmt, model, batches, threads),
               "scan": lambda: scan_runner(fmt, model, data, args.batch),
               "naive": lambda: naive_runner(fmt, model, batches, threads)}
    t = interleaved({k: make() for k, make in runners.items() if k in args.methods}, args.reps)
    for k in runners:
        t.setdefault(k, {"wall": float("nan"), "cpu": float("nan"), "wall_all": []})
    row = {**base, **t, "scan/bare": t["scan"]["wall"] / t["bare"]["wall"],
           "naive/scan": t["naive"]["wall"] / t["scan"]["wall"],
           "scan/bare cpu": t["scan"]["cpu"] / t["bare"]["cpu"], "load": os.getloadavg()[0]}
    print(f"  {base['model']:13s} {fmt:12s} T={threads} bare {t['bare']['wall']:7.3f}s  "
          f"scan {t['scan']['wall']:7.3f}s  naive {t['naive']['wall']:7.3f}s  "
          f"scan/bare {row['scan/bare']:.3f} (cpu {row['scan/bare cpu']:.3f})  "
          f"naive/scan {row['naive/scan']:.2f}  load {row['load']:.2f}", file=sys.stderr, flush=True)
    return row


# ---- memory: peak RSS of N and 10N samples, each in a fresh process ----------------------------

_MEMORY_CHILD = r"""
import sys, tempfile, json
import numpy as np
sys.path.insert(0, {here!r})
import torch, relu_doctor
torch.set_num_threads({threads})
import bench_models
fmt, name, samples, res, tokens, batch = {fmt!r}, {name!r}, {samples}, {res}, {tokens}, {batch}
shape = bench_models.input_shape(name, res, tokens)
model = bench_models.build(name)
if fmt == "onnx":
    path = tempfile.mkdtemp() + "/m.onnx"
    bench_models.export_onnx(model, path, torch.zeros(batch, *shape))
    model = path
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
def bare():  # the same number of batches of the same size, plain inference
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {{"input": x}})
    else:
        run = lambda x: model(torch.from_numpy(x))
    with torch.inference_mode():
        for i in range(0, samples, batch):
            run(np.random.default_rng(i).standard_normal((min(batch, samples - i), *shape), dtype=np.float32))
# The peak of the run alone: building and exporting the model can peak higher, and VmHWM
# would keep that. Writing 5 to clear_refs resets it to the current RSS.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
if {mode!r} == "scan":
    relu_doctor.scan(model, input_shape=shape, samples=samples, batch_size=batch)
else:
    bare()
print(json.dumps({{"before_kib": before, "peak_kib": status("VmHWM")}}))
"""


def memory(args: argparse.Namespace) -> list[dict]:
    """Peak RSS of scans of N and 10N samples, and of bare inference over the same batches."""
    rows = []
    sizes = (args.memory_samples, 10 * args.memory_samples)
    for fmt, name in args.memory_cases:
        peaks = {}
        for mode in ("bare", "scan"):
            for samples in sizes:
                code = _MEMORY_CHILD.format(here=str(HERE), threads=args.threads[0], fmt=fmt, name=name,
                                            samples=samples, res=args.res, tokens=args.tokens, batch=args.batch,
                                            mode=mode)
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                      cwd=ROOT, env={**_default_env(), **FIXED_MMAP})
                peaks[mode, samples] = json.loads(done.stdout.strip().splitlines()[-1])
        mib = {k: v["peak_kib"] / 1024 for k, v in peaks.items()}
        row = {"model": name, "format": fmt, "samples": list(sizes),
               "before_mib": peaks["scan", sizes[0]]["before_kib"] / 1024,
               "bare_mib": [mib["bare", n] for n in sizes], "peak_mib": [mib["scan", n] for n in sizes],
               "bare_growth": mib["bare", sizes[1]] / mib["bare", sizes[0]] - 1,
               "growth": mib["scan", sizes[1]] / mib["scan", sizes[0]] - 1}
        rows.append(row)
        print(f"  memory {name} {fmt}: RSS before {row['before_mib']:.0f} MiB; peak of bare inference "
              f"{row['bare_mib'][0]:.0f} -> {row['bare_mib'][1]:.0f} MiB ({row['bare_growth']:+.1%}), of the scan "
              f"{row['peak_mib'][0]:.0f} -> {row['peak_mib'][1]:.0f} MiB ({row['growth']:+.1%}) for "
              f"{sizes[0]} -> {sizes[1]} samples", file=sys.stderr, flush=True)
    return rows


# ---- start-up and the end-to-end CLI ------------------------------------------------------------


def startup(args: argparse.Namespace) -> list[dict]:
    exe = Path(sys.executable).with_name("relu-doctor")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "relu_doctor"]
    cases = [("relu-doctor --help", [*cli, "--help"], 0.3),
             ("relu-doctor --version", [*cli, "--version"], 0.3)]
    onnx_model, onnx_data = ROOT / "sample_models/sample_cnn.onnx", ROOT / "sample_models/sample_batch.npy"
    if onnx_model.exists():
        cases.append(("relu-doctor scan sample_cnn.onnx --data sample_batch.npy",
                      [*cli, "scan", str(onnx_model), "--data", str(onnx_data)], 1.5))
    rows = []
    for label, cmd, target in cases:
        times = []
        for _ in range(args.startup_reps + 1):  # the first one warms the page cache
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_default_env())
            times.append(time.perf_counter() - t)
            if done.returncode not in (0, 1):
                raise RuntimeError(f"{label} failed ({done.returncode}): {done.stderr[-500:]}")
        rows.append({"command": label, "median_s": statistics.median(times[1:]), "min_s": min(times[1:]),
                     "target_s": target, "imports_torch": _imports_torch(cmd[len(cli):])})
        print(f"  {label}: median {rows[-1]['median_s']:.3f}s (min {rows[-1]['min_s']:.3f}s), "
              f"imports torch: {rows[-1]['imports_torch']}", file=sys.stderr, flush=True)
    return rows


def _imports_torch(argv: list[str]) -> bool:
    code = ("import sys\nsys.argv = ['relu-doctor', *sys.argv[1:]]\nfrom relu_doctor.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=_default_env())
    return done.stderr.strip().splitlines()[-1] == "True"


def _default_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in KEEP_MEMORY}


# ---- report -----------------------------------------------------------------------------------


def machine() -> dict:
    import onnxruntime
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "load_at_start": os.getloadavg()}


def markdown(args: argparse.Namespace, info: dict, rows: list[dict], mem: list[dict], start: list[dict]) -> str:
    out = [f"Machine: {info['nproc']} CPUs ({info['cpu']}), torch {info['torch']}, onnxruntime "
           f"{info['onnxruntime']}, numpy {info['numpy']}, Python {info['python']}; malloc: {_malloc(args)}. "
           f"Load average at start {info['load_at_start'][0]:.2f}.", "",
           f"{args.samples} samples, batch {args.batch}, median of {args.reps} interleaved repetitions after a "
           "warm-up; wall seconds (cpu: scan/bare in process CPU time, which the other processes of a shared "
           "machine disturb less)."]
    for threads in args.threads:
        out += ["", f"torch.set_num_threads({threads}), onnxruntime intra_op_num_threads={threads}:", "",
                "| model | format | input | bare s | scan s | naive s | scan/bare | (cpu) | target | naive/scan "
                "| load |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["threads"] == threads):
            shape = "x".join(map(str, r["input"]))
            if r.get("skipped"):
                out.append(f"| {r['model']} | {r['format']} | {shape} | {r['skipped']} | | | | | | | |")
                continue
            target = TARGET[r["format"]]
            ok = "met" if r["scan/bare"] <= target else "missed"
            naive_ok = "" if r["model"] == "mlp" else (" (met)" if r["naive/scan"] >= NAIVE_TARGET else " (missed)")
            out.append(f"| {r['model']} | {r['format']} | {shape} | {r['bare']['wall']:.3f} | "
                       f"{r['scan']['wall']:.3f} | {r['naive']['wall']:.3f} | **{r['scan/bare']:.3f}** | "
                       f"{r['scan/bare cpu']:.3f} | <= {target:.2f} ({ok}) | {r['naive/scan']:.2f}{naive_ok} | "
                       f"{r['load']:.1f} |")
    if mem:
        out += ["", f"Peak RSS, each run in a fresh process (synthetic inputs, {args.threads[0]} threads, "
                f"{' '.join(f'{k}={v}' for k, v in FIXED_MMAP.items())}); RSS before the run is the loaded model:", "",
                "| model, format | samples | RSS before MiB | bare inference peak MiB | scan peak MiB | "
                "bare growth | scan growth (target <= 5%) |", "|---|---|---:|---|---|---:|---:|"]
        for r in mem:
            out.append(f"| {r['model']}, {r['format']} | {r['samples'][0]} -> {r['samples'][1]} | "
                       f"{r['before_mib']:.0f} | {r['bare_mib'][0]:.0f} -> {r['bare_mib'][1]:.0f} | "
                       f"{r['peak_mib'][0]:.0f} -> {r['peak_mib'][1]:.0f} | {r['bare_growth']:+.1%} | "
                       f"{r['growth']:+.1%} |")
    if start:
        out += ["", f"Start-up, wall time of the command, median of {args.startup_reps} after one warm-up:", "",
                "| command | median s | min s | target s | imports torch |", "|---|---:|---:|---:|---|"]
        for r in start:
            out.append(f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | < {r['target_s']} | "
                       f"{'yes' if r['imports_torch'] else 'no'} |")
    out.append(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}.")
    return "\n".join(out)


def _malloc(args: argparse.Namespace) -> str:
    if args.system_malloc:
        return "glibc defaults"
    return "freed memory kept (" + " ".join(f"{k}={v}" for k, v in KEEP_MEMORY.items()) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma list (default: every model in bench_models.py)")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--res", type=int, default=224, help="CNN input height and width")
    p.add_argument("--tokens", type=int, default=128, help="MLP tokens per sample (384 features)")
    p.add_argument("--samples", type=int, default=256, help="the spec's default sample size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", default="2,1",
                   help="intra-op thread counts to measure, in turn (the first one also for memory)")
    p.add_argument("--memory-samples", type=int, default=128,
                   help="the small scan (several batches: the allocator settles); the large one is 10x")
    p.add_argument("--memory-cases", default="eager:resnet18,onnx:resnet18,eager:mlp")
    p.add_argument("--startup-reps", type=int, default=7)
    p.add_argument("--methods", default="bare,scan,naive", help="which of bare,scan,naive to run")
    p.add_argument("--skip", default="", help="comma list of sections to skip: overhead,memory,startup")
    p.add_argument("--quick", action="store_true", help="112x112 and 32 tokens, 3 repetitions, 64 samples")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--system-malloc", action="store_true", help="time with glibc's default malloc settings")
    args = p.parse_args()
    if not args.system_malloc and any(os.environ.get(k) != v for k, v in KEEP_MEMORY.items()):
        # glibc reads these when the process starts: run again with them
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_MEMORY})
    if args.quick:
        args.res, args.tokens, args.reps, args.samples, args.memory_samples = 112, 32, 3, 64, 32
    import bench_models  # imports torch: after the exec above

    args.models = args.models.split(",") if args.models else list(bench_models.MODELS)
    args.formats = args.formats.split(",")
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.methods = args.methods.split(",")
    args.memory_cases = [tuple(c.split(":")) for c in args.memory_cases.split(",") if c]
    skip = set(args.skip.split(","))

    import torch

    torch.set_num_threads(args.threads[0])
    info = machine()
    print(f"{info['nproc']} CPUs, {info['cpu']}, torch {info['torch']}, load {info['load_at_start']}",
          file=sys.stderr)
    rows = overhead(args) if "overhead" not in skip else []
    mem = memory(args) if "memory" not in skip else []
    start = startup(args) if "startup" not in skip else []
    text = markdown(args, info, rows, mem, start)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"},
                                         "machine": info, "overhead": rows, "memory": mem, "startup": start},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
