"""DeadReLUMonitor under Lightning's own DDP (two CPU processes, gloo): each window's counters
are summed over the ranks, and equal the fires a plain forward hook counted on each rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(sys.platform != "linux", reason="DDP with gloo is tested on Linux")
def test_windows_are_summed_over_lightnings_ranks(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from tests.lightning_ddp_worker import BATCH, DEAD, WINDOW

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "lightning_ddp_worker.py"), str(tmp_path)],
                          env=env, timeout=300, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    reports = [r["reports"] for r in ranks]
    assert [rep["sample"]["steps"] for rep in reports[0]] == [[0, 1], [4, 5]]
    for report, other in zip(*reports):  # every rank holds the same, summed windows
        assert report["sites"] == other["sites"]
        assert report["sample"]["ranks"] == 2
        assert report["sample"]["samples"] == 2 * WINDOW * BATCH
        assert report["sample"]["forward_passes"] == 2 * WINDOW  # both ranks' passes, as the samples
        site = report["sites"][0]
        assert site["dead_indices"] == DEAD
        first, last = report["sample"]["steps"]
        counted = [sum(r["fires_by_step"][str(step)][n] for r in ranks for step in range(first, last + 1))
                   for n in range(len(site["counters"]["fires"]))]
        assert site["counters"]["fires"] == counted
    assert ranks[0]["alone_samples"] == 16  # rank 0's own scan: whole, not a shard, and it returned
