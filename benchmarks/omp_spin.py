"""Two-thread scans against libgomp's spin count: bare inference and the scan, per model,
with GOMP_SPINCOUNT unset (libgomp's default) and set to a few values.

    .venv/bin/python benchmarks/omp_spin.py [--spins default,3000,30000] [--models mobilenet_v2,resnet18,mlp]
        [--rounds 2] [--reps 3] [--samples 128]

libgomp reads GOMP_SPINCOUNT once, when torch loads it, so every (model, spin count) runs
in a process of its own: one untimed bare run and one untimed scan, then --reps of each,
alternating; the median of each is printed, wall and process CPU time, on 2 threads, with
freed memory kept as scan_overhead.py keeps it (glibc's default makes page faults of the
freed activations the largest cost of a CNN's run, and a noisy one). The
rounds repeat every combination in turn, so a change of load hits them all alike. What
it decides (benchmarks/README.md, "Two threads"): whether a spin count lets the
reduction use the second core (torch's OpenMP worker otherwise spins on it after every
op) without slowing bare inference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}  # scan_overhead's

CHILD = r"""
import json, resource, statistics, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import numpy as np, torch
import bench_models, relu_doctor
torch.set_num_threads(2)
name, samples, reps = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = bench_models.build(name)
x = np.random.default_rng(0).standard_normal((samples, *bench_models.input_shape(name)), dtype=np.float32)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def bare():
    with torch.inference_mode():
        for i in range(0, samples, 32):
            model(torch.from_numpy(x[i:i + 32]))

def scan():
    relu_doctor.scan(model, x, batch_size=32, warn=False)

runs = {"bare": bare, "scan": scan}
for f in runs.values():
    f()
wall = {k: [] for k in runs}
used = {k: [] for k in runs}
for _ in range(reps):
    for k, f in runs.items():
        start, start_cpu = time.perf_counter(), cpu()
        f()
        wall[k].append(time.perf_counter() - start)
        used[k].append(cpu() - start_cpu)
print(json.dumps({k: [statistics.median(wall[k]), statistics.median(used[k])] for k in runs}))
"""


def run(model: str, spin: str, samples: int, reps: int) -> dict[str, list[float]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(KEEP_MEMORY)  # as scan_overhead.py: otherwise page faults of freed activations dominate
    if spin != "default":
        env["GOMP_SPINCOUNT"] = spin
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE.parent), str(HERE), model, str(samples), str(reps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spins", default="default,3000,30000")
    p.add_argument("--models", default="mobilenet_v2,resnet18,mlp")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--samples", type=int, default=128)
    args = p.parse_args()
    spins, models = args.spins.split(","), args.models.split(",")
    print(f"2 threads, {args.samples} samples in batches of 32, median of {args.reps} per process; "
          f"load at start {os.getloadavg()[0]:.1f}")
    print("| round | model | GOMP_SPINCOUNT | bare s | scan s | scan / bare (wall) | (cpu) | bare / default bare |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for model in models:
            default_bare = None
            for spin in spins:
                m = run(model, spin, args.samples, args.reps)
                (bare_wall, bare_cpu), (scan_wall, scan_cpu) = m["bare"], m["scan"]
                if spin == "default":
                    default_bare = bare_wall
                versus = f"{bare_wall / default_bare:.3f}" if default_bare else ""
                print(f"| {r + 1} | {model} | {spin} | {bare_wall:.3f} | {scan_wall:.3f} | "
                      f"{scan_wall / bare_wall:.3f} | {scan_cpu / bare_cpu:.3f} | {versus} |", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
