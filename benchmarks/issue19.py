"""Every row of issue 19's table in one run, one row after the other (each row's own
script interleaves what it compares), with the load average beside each.

    .venv/bin/python benchmarks/issue19.py [--out DIR] [--quick]

Rows and the scripts that measure them:
- MobileNetV2 scan / bare, eager, TorchScript, .pt2 and ONNX, on 1 and 2 threads:
  scan_overhead.py (128 samples, 5 repetitions)
- ResNet-18 ONNX peak RSS, scan against bare inference: scan_overhead.py's memory section
- ResNet-18 ONNX, 32 samples, session creation in both: onnx_overhead.py
- patch ResNet-18 .pt2 -> .pt2 and state dict -> ONNX against scan + one export: patch_time.py
- CLI scan of the 4-site TorchScript sample against `import torch`: here, interleaved
- ResNet-18 at batch 256 on a CUDA device, scan / bare: cuda_scan.py (where there is one)
Each script's output goes to DIR (default benchmarks/out-issue19, not kept in git) and to
stdout, so one file holds the whole run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def rows(out: Path, quick: bool) -> list[tuple[str, list[str]]]:
    reps, samples = ("2", "64") if quick else ("5", "128")
    bench = ROOT / "benchmarks"
    return [
        ("MobileNetV2 scan / bare, every format", [
            PY, str(bench / "scan_overhead.py"), "--models", "mobilenet_v2", "--threads", "1,2",
            "--methods", "bare,scan", "--samples", samples, "--reps", reps, "--skip", "memory,startup",
            "--json", str(out / "mobilenet_v2.json")]),
        ("ResNet-18 ONNX peak RSS", [
            PY, str(bench / "scan_overhead.py"), "--skip", "overhead,startup", "--memory-cases", "onnx:resnet18",
            "--memory-samples", "32", "--threads", "1", "--json", str(out / "rss.json")]),
        ("ResNet-18 ONNX, 32 samples, session creation in both", [
            PY, str(bench / "onnx_overhead.py"), "--model", "resnet18", "--samples", "32", "--repeats", reps,
            "--threads", "1"]),
        ("patch ResNet-18", [PY, str(bench / "patch_time.py"), "--threads", "1"]),
        ("ResNet-18 on CUDA, batch 256", [PY, str(bench / "cuda_scan.py"), "--reps", reps, "--if-available"]),
    ]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli_row(reps: int) -> str:
    """`import torch` and the CLI scan of the TorchScript sample, interleaved."""
    sample = ROOT / "sample_models"
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "import torch": [PY, "-c", "import torch"],
            "relu-doctor scan": [PY, "-m", "relu_doctor", "scan", str(sample / "sample_cnn.pt"), "--data",
                                 str(sample / "sample_batch.npy"), "-q", "-f", "json", "-o", f"{tmp}/o.json"],
        }
        for threads in ("1", ""):
            env = {**os.environ, "OMP_NUM_THREADS": threads} if threads else dict(os.environ)
            wall: dict[str, list[float]] = {k: [] for k in commands}
            cpu: dict[str, list[float]] = {k: [] for k in commands}
            for _ in range(reps):
                for name, cmd in commands.items():
                    start, start_cpu = time.perf_counter(), children_cpu()
                    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(children_cpu() - start_cpu)
            w = {k: statistics.median(v) for k, v in wall.items()}
            c = {k: statistics.median(v) for k, v in cpu.items()}
            lines.append(f"{threads or 'default'} thread(s), median of {reps}: import torch {w['import torch']:.2f} s "
                         f"wall / {c['import torch']:.2f} s cpu; CLI scan {w['relu-doctor scan']:.2f} s wall / "
                         f"{c['relu-doctor scan']:.2f} s cpu; CLI - import torch = "
                         f"{w['relu-doctor scan'] - w['import torch']:+.2f} s wall, "
                         f"{c['relu-doctor scan'] - c['import torch']:+.2f} s cpu; load {os.getloadavg()[0]:.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out-issue19")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and samples: a smoke run")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"# issue 19, one run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n", flush=True)
    for title, cmd in rows(args.out, args.quick):
        print(f"## {title}\n\n    {' '.join(Path(c).name if c == PY else c for c in cmd)}\n", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        log = args.out / f"{title.split(',')[0].replace(' ', '_').replace('/', '')}.log"
        log.write_text(done.stdout + done.stderr)
        print(done.stdout.strip() if done.returncode == 0 else f"FAILED ({done.returncode}):\n{done.stderr[-2000:]}")
        print(f"\n({time.perf_counter() - start:.0f} s, load at the end {os.getloadavg()[0]:.1f})\n", flush=True)
    print("## CLI scan of the 4-site TorchScript sample\n")
    print(cli_row(3 if args.quick else 5))


if __name__ == "__main__":
    main()
