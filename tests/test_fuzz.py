"""Mutated model files end in exit 0 or 2 within a time bound: never a bug (3), a crash or a hang.

The cases run in one child process (torch imports once), which prints a line per case;
the parent holds the time bound, so a hang or a segfault fails the test and names the case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
PER_CASE_SECONDS = 20
# (cases, seed): a short run in the quick tier (it was a tenth of its time), the long one slow
RUNS = [pytest.param(40, 1234, id="40"), pytest.param(200, 5678, id="200", marks=pytest.mark.slow)]

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from typer.testing import CliRunner
from relu_doctor.cli import app

source, data, workdir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
cases, seed = int(sys.argv[4]), int(sys.argv[5])
original = source.read_bytes()
rng = np.random.default_rng(seed)


def mutate(blob: bytes) -> bytes:
    b = bytearray(blob)
    how = rng.integers(4)
    if how == 0:  # flip a few bytes
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] = rng.integers(256)
    elif how == 1:  # truncate
        b = b[: rng.integers(0, len(b))]
    elif how == 2:  # zero a block
        start = rng.integers(0, len(b))
        b[start:start + rng.integers(1, 4096)] = bytes(min(len(b) - start, 4096))[: len(b[start:start + 4096])]
    else:  # insert junk
        at = rng.integers(0, len(b))
        b[at:at] = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
    return bytes(b)


for case in range(cases):
    path = workdir / f"case{case}{source.suffix}"
    path.write_bytes(mutate(original))
    print(json.dumps({"case": case, "start": True}), flush=True)
    t = time.perf_counter()
    result = CliRunner().invoke(app, ["scan", str(path), "--data", data, "-f", "json", "-q"])
    err = result.stderr.strip().splitlines()
    print(json.dumps({"case": case, "code": result.exit_code, "secs": time.perf_counter() - t,
                      "err": err[:3]}), flush=True)
    path.unlink()
"""


@pytest.mark.parametrize(("cases", "seed"), RUNS)
@pytest.mark.parametrize("model", ["sample_cnn.pt2", "sample_cnn.onnx", "sample_cnn.pt"])
def test_mutated_models_never_crash_or_hang(model: str, cases: int, seed: int, tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.load(SAMPLES / "sample_batch.npy")[:16])
    cmd = [sys.executable, "-c", CHILD, str(SAMPLES / model), str(data), str(tmp_path), str(cases), str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PER_CASE_SECONDS * 6 + cases)
        lines, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        lines, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    results = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    finished = [r for r in results if "code" in r]
    last = results[-1] if results else None
    assert code == 0 and len(finished) == cases, f"child ended with {code} at {last}"
    bugs = [r for r in finished if r["code"] not in (0, 2)]
    assert not bugs, bugs[:3]
    slow = [r for r in finished if r["secs"] > PER_CASE_SECONDS]
    assert not slow, slow[:3]
    for r in finished:
        if r["code"] == 2:
            assert 1 <= len(r["err"]) <= 2, r
