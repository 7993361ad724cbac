"""What relu_doctor.watch costs a training loop, run by hand (not in CI).

    .venv/bin/python benchmarks/watch_overhead.py            # both models, 30 interleaved pairs: minutes
    .venv/bin/python benchmarks/watch_overhead.py --quick    # 6 pairs: a smoke run

For a ResNet-18-sized CNN (bench_models.resnet18, 64x64 images so that a CPU step takes
about a second) and the transformer-style MLP (bench_models.mlp, 32 tokens), in training
mode with SGD, batch 32:
  plain     one training step (forward, backward, optimizer step) of a model,
  in-window the same step of an identical model whose watch window is open (every
            forward pass reduced into the counters),
interleaved step by step, medians of wall and process CPU time. Then
  close     what the step() that ends a window costs (the one host sync, the Report, a
            history line), median over windows,
  probe     what one probe costs (a scan of a 32-sample batch in eval mode, state restored),
and the average cost per step at the defaults, every=E, window=W:
  (W * (in-window - plain) + close) / (E * plain).
Steps outside a window run with no hook attached at all (step() counts), so they cost
nothing measurable. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_models import build  # noqa: E402

import relu_doctor as rd  # noqa: E402
from relu_doctor.training.watch import DEFAULT_EVERY, DEFAULT_WINDOW  # noqa: E402

TARGET = 0.03  # average cost per step at the defaults


def _setup(name: str, batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = build(name).train()
    if name == "mlp":
        x = torch.randn(batch, 32, 384)
        return model, x, torch.randn(batch, 32, 384)
    x = torch.randn(batch, 3, 64, 64)
    return model, x, torch.randint(0, 1000, (batch,))


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    out = model(x)
    loss = nn.functional.cross_entropy(out, y) if y.dtype == torch.int64 else nn.functional.mse_loss(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, pairs: int, batch: int, history: Path) -> dict[str, float]:
    plain, x, y = _setup(name, batch)
    watched, _, _ = _setup(name, batch)
    opt_p = torch.optim.SGD(plain.parameters(), lr=1e-3)
    opt_w = torch.optim.SGD(watched.parameters(), lr=1e-3)
    big = 10 ** 9
    w = rd.watch(watched, every=big, window=big)  # one window open for the whole comparison
    w.start()
    for _ in range(2):  # warm-up: allocator, first-call costs of both
        _step(plain, opt_p, x, y)
        _step(watched, opt_w, x, y)
        w.step()
    p_wall, p_cpu, w_wall, w_cpu = [], [], [], []
    for i in range(pairs):
        order = [(plain, opt_p, p_wall, p_cpu, None), (watched, opt_w, w_wall, w_cpu, w)]
        for model, opt, walls, cpus, watch in (order if i % 2 == 0 else order[::-1]):
            wall, cpu = _timed(lambda m=model, o=opt: _step(m, o, x, y))
            walls.append(wall)
            cpus.append(cpu)
            if watch is not None:
                watch.step()
    w.capture.detach()
    # The step() that ends a window: sync, Report, history line.
    closing = rd.watch(watched, every=2, window=1, history=history)
    closing.start()
    close = []
    for _ in range(max(3, pairs // 5)):
        _step(watched, opt_w, x, y)
        close.append(_timed(closing.step)[0])  # ends the window
        _step(watched, opt_w, x, y)
        closing.step()  # outside a window: opens the next one
    closing.close()
    prober = rd.watch(watched, every=1, probe=x)
    prober.start()
    for _ in range(max(3, pairs // 5)):
        prober.step()
    return {
        "plain": statistics.median(p_wall), "in_window": statistics.median(w_wall),
        "plain_cpu": statistics.median(p_cpu), "in_window_cpu": statistics.median(w_cpu),
        "close": statistics.median(close), "probe": statistics.median(prober.probe_seconds[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 pairs per model: a smoke run")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", default="resnet18,mlp")
    args = parser.parse_args()
    pairs = 6 if args.quick else args.pairs
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"defaults: every={DEFAULT_EVERY}, window={DEFAULT_WINDOW}; batch {args.batch}; {pairs} interleaved pairs\n")
    print("| model | plain step | in-window step | in-window cost | close | average at defaults | probe |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = measure(name, pairs, args.batch, Path(tmp) / f"{name}.jsonl")
            extra = r["in_window"] - r["plain"]
            average = (DEFAULT_WINDOW * extra + r["close"]) / (DEFAULT_EVERY * r["plain"])
            cpu_extra = (r["in_window_cpu"] - r["plain_cpu"]) / r["plain_cpu"]
            flag = "" if average <= TARGET else " (over target)"
            print(f"| {name} | {r['plain'] * 1e3:.0f} ms | {r['in_window'] * 1e3:.0f} ms | "
                  f"{extra / r['plain']:+.1%} (CPU time {cpu_extra:+.1%}) | {r['close'] * 1e3:.0f} ms | "
                  f"{average:.2%}{flag} | {r['probe'] * 1e3:.0f} ms |")
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
