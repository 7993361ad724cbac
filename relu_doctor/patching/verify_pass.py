"""Verification rides on the scans: the original's scan records its outputs and timings
(OutputRecorder), the rescan of the written model feeds the per-site checks, its outputs
and its timings (the runners' observers in verify_torch.py, verify_onnx.py). Both are
backends.CaptureObserver objects.

Before this, verification ran the original and the patched model again on the sample,
the patched one once more under the checking dispatch mode, timing top-ups, and then the
rescan: on ResNet-18 (64 samples) about 12 forward passes beyond the scan; now 3 (the
rescan and one batch of fresh inputs). Imports torch only for a torch model's outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..data_sources import tensor_to_numpy
from .verify import Verification, max_abs_change

# Model outputs the original's scan keeps for the comparison; past this the comparison
# runs both models again, batch by batch (a segmentation model's outputs can be GBs).
RECORD_LIMIT_BYTES = 256 << 20


def host_outputs(outputs: Any, valid: int) -> list[np.ndarray]:
    """A model's outputs as numpy arrays with the sample's rows only (ONNX: already arrays)."""
    if isinstance(outputs, list) and all(isinstance(o, np.ndarray) for o in outputs):
        return [o[:valid] if o.ndim else o for o in outputs]
    return torch_outputs(outputs, valid)


def torch_outputs(y: Any, valid: int) -> list[np.ndarray]:
    """The tensors of a torch model's outputs (any nesting), sample rows only, as numpy."""
    import torch
    from torch.utils._pytree import tree_flatten

    leaves = [t for t in tree_flatten(y)[0] if isinstance(t, torch.Tensor)]
    return [tensor_to_numpy(t[:valid] if t.dim() else t) for t in leaves]


def best_seconds(runs: list[tuple[int, float]]) -> tuple[float, int]:
    """Seconds per batch from (rows, seconds) runs: the first run is a warm-up and only
    batches of its size count; the fastest counts (other work on the machine only adds
    time). A sample of one batch has only its warm-up to go by."""
    if not runs:
        return 0.0, 0
    rows = runs[0][0]
    counted = [s for r, s in runs[1:] if r == rows] or [runs[0][1]]
    return min(counted), rows


class OutputRecorder:
    """Observer of the original's scan: its outputs per batch (up to RECORD_LIMIT_BYTES)
    and the seconds of each batch's run."""

    def __init__(self, limit: int = RECORD_LIMIT_BYTES) -> None:
        self.limit = limit
        self.outputs: list[list[np.ndarray]] = []
        self.runs: list[tuple[int, float]] = []
        self.complete = True  # False once the outputs outgrew the limit (they are dropped)
        self.bytes = 0

    def start_batch(self) -> None:
        pass

    def on_call(self, call: Any) -> None:
        pass

    def onnx_fetch(self, proto: Any) -> list[str]:
        return []

    def finish_batch(self, outputs: Any, valid: int, rows: int, seconds: float,
                     fetched: dict[str, Any] | None = None) -> None:
        self.runs.append((rows, seconds))
        if not self.complete:
            return
        # copies: a model may return a view of a buffer that the next batch overwrites
        arrays = [np.array(a, copy=True) for a in host_outputs(outputs, valid)]
        self.bytes += sum(a.nbytes for a in arrays)
        if self.bytes > self.limit:
            self.complete, self.outputs = False, []
            return
        self.outputs.append(arrays)


class RescanObserver:
    """The common part of the rescan's observers: compare outputs with the recorded ones,
    time each batch less the time the checks took."""

    def __init__(self, result: Verification, recorded: OutputRecorder | None) -> None:
        self.result = result
        self.recorded = recorded
        self.batches = 0
        self.runs: list[tuple[int, float]] = []
        self.check_seconds = 0.0  # spent in the checks during the current batch's run

    def start_batch(self) -> None:
        self.check_seconds = 0.0

    @contextmanager
    def checking(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.check_seconds += time.perf_counter() - start

    def finish_batch(self, outputs: Any, valid: int, rows: int, seconds: float,
                     fetched: dict[str, Any] | None = None) -> None:
        # the checks that ran inside the forward pass (torch's on_call) are not the model's time
        self.runs.append((rows, max(seconds - self.check_seconds, 0.0)))
        if fetched:
            self.check_fetched(fetched, valid)
        recorded = self.recorded
        if recorded is not None and recorded.complete and self.batches < len(recorded.outputs):
            change = max_abs_change(recorded.outputs[self.batches], host_outputs(outputs, valid))
            self.result.max_abs_change = max(self.result.max_abs_change, change)
        self.batches += 1
        self.result.samples += valid

    def check_fetched(self, fetched: dict[str, Any], valid: int) -> None:
        """ONNX: the checks read the fetched tensors after the run."""

    def compared(self) -> bool:
        """Whether every batch was compared with a recorded output."""
        r = self.recorded
        return r is not None and r.complete and len(r.outputs) == self.batches

    def timings(self) -> None:
        original, rows = best_seconds(self.recorded.runs if self.recorded is not None else [])
        patched, patched_rows = best_seconds(self.runs)
        if rows and rows == patched_rows:
            self.result.seconds_original, self.result.seconds_patched = original, patched
            self.result.timed_batch = rows
