"""Scans spread over processes give the single-process answer: torchrun ranks and --shard jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import relu_doctor as rd
from tests.models import case, sample_data

FLOAT_SUMS = ("abs_sum", "total")  # float64 sums: equal to rounding; every count is exact


def assert_same_report(a: dict, b: dict) -> None:
    assert a["summary"] == pytest.approx(b["summary"], rel=1e-12)
    assert len(a["sites"]) == len(b["sites"])
    for x, y in zip(a["sites"], b["sites"], strict=True):
        cx, cy = x.pop("counters"), y.pop("counters")
        x_mean, y_mean = x.pop("mean"), y.pop("mean")
        assert x == y  # names, kinds, dead indices, dormant, sparsity, ... exactly
        assert x_mean == pytest.approx(y_mean, rel=1e-12)
        for key in FLOAT_SUMS:
            np.testing.assert_allclose(cx.pop(key), cy.pop(key), rtol=1e-12)
        assert cx == cy


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dist")
    c = case("reused_relu")
    model = folder / "m.pt"
    torch.jit.script(c.build()).save(str(model))
    data = folder / "x.npy"
    np.save(data, sample_data(c, n=45, seed=3))  # 45: shards and ranks of unequal size
    return model, data


def test_shards_merge_into_the_whole(planted: tuple[Path, Path]) -> None:
    model, data = planted
    whole = rd.scan(model, data, batch_size=8)
    parts = [rd.scan(model, data, batch_size=8, shard=(i, 3)) for i in range(3)]
    assert [p.sample["samples"] for p in parts] == [15, 15, 15]
    for whole_site, *shard_sites in zip(whole.sites, *(p.sites for p in parts), strict=True):
        merged = shard_sites[0].counters.merge(shard_sites[1].counters).merge(shard_sites[2].counters)
        np.testing.assert_array_equal(merged.fires, whole_site.counters.fires)
        np.testing.assert_array_equal(merged.sample_fires, whole_site.counters.sample_fires)
        assert merged.rows == whole_site.counters.rows
        np.testing.assert_allclose(merged.abs_sum, whole_site.counters.abs_sum, rtol=1e-12)


def test_synthetic_shards_are_the_same_samples_as_the_whole(planted: tuple[Path, Path]) -> None:
    model, _ = planted
    whole = rd.scan(model, input_shape=(3, 8, 8), samples=20)
    a = rd.scan(model, input_shape=(3, 8, 8), samples=20, shard="0/2")
    b = rd.scan(model, input_shape=(3, 8, 8), samples=20, shard="1/2")
    merged = a.sites[0].counters.merge(b.sites[0].counters)
    np.testing.assert_array_equal(merged.fires, whole.sites[0].counters.fires)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_torchrun_two_ranks_equal_one_process(planted: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = planted
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    single = rd.scan(model, data, batch_size=8).to_dict()
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "relu_doctor", "scan", str(model),
         "--data", str(data), "--batch-size", "8", "-f", "json", "-o", str(out), "-q"],
        check=True, env=env, timeout=240, capture_output=True,
    )
    distributed = json.loads(out.read_text())
    assert distributed["sample"]["samples"] == 45
    assert_same_report(json.loads(json.dumps(single)), distributed)
