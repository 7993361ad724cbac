"""watch() under torchrun + DDP: ranks all-reduce each window, rank 0 alone writes the history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import relu_doctor as rd

ROOT = Path(__file__).resolve().parent.parent


def build() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    with torch.no_grad():
        model[0].weight[1] = 0
        model[0].bias[1] = -1  # dead on every input
    return model


def data() -> torch.Tensor:
    return torch.randn(10, 4, generator=torch.Generator().manual_seed(3))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_two_ranks_write_one_history_equal_to_one_process(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun
    history = tmp_path / "relu.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(ROOT / "tests" / "ddp_watch_worker.py"),
                    str(history)], check=True, env=env, timeout=240, capture_output=True, cwd=ROOT)
    assert not list(tmp_path.glob("*.rank1"))  # rank 1 writes nothing
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    model, x = build(), data()
    with rd.watch(model, every=2, window=2) as w:
        for _ in range(4):
            model(x)
            w.step()
    assert len(lines) == len(w.reports) == 2
    for got, want in zip(lines, w.reports):
        assert got["sample"]["samples"] == 20 and got["sample"]["ranks"] == 2
        assert got["sample"]["forward_passes"] == 2 * want.sample["forward_passes"]  # both ranks' passes
        assert got["sample"]["steps"] == want.sample["steps"]
        site, ref = got["sites"][0], want.to_dict()["sites"][0]
        assert site["name"] == ref["name"] == "1"  # DDP's "module." prefix is not in the name
        assert site["dead_indices"] == ref["dead_indices"] and 1 in ref["dead_indices"]
        assert site["counters"]["fires"] == ref["counters"]["fires"]
        assert site["counters"]["sample_fires"] == ref["counters"]["sample_fires"]
