"""Sub-batches for memory-bound models: each site's activation and its reductions stay in cache.

onnxruntime runs every node over the whole batch before the next. On a network that does
little arithmetic per activation element (MobileNetV2: depthwise and 1x1 convolutions,
about 50 multiply-adds per ReLU6 output), a batch of 32 makes each activation 150 MB, far
beyond the caches, and each reduction node that the scan adds reads it back from memory.
Run in sub-batches of one or two samples, an activation is a few MB and its reductions,
listed right after it (onnx_instrument._instrument_graph), read it from cache. Measured on
MobileNetV2 (128 samples, one thread, per batch, CPU time against bare inference at batch
32): scan 1.86-1.94x at batch 32, 1.72 in sub-batches of 8, 1.45-1.49 of 1 to 3; bare
inference itself 0.94-0.98x in sub-batches. On ResNet-18 (about 800 multiply-adds per
ReLU output) the same split cost 4% (1.03 -> 1.07), so only memory-bound graphs are split.

onnxruntime's intra-op threads help little on sub-batches that small (CPU time grew by
half on two threads), so sub-batches run on parallel workers, each a single-threaded run
of the same session (`InferenceSession.run` is thread-safe and releases the GIL). The
sub-batches' partials are stacked back into the batch's before the host adds them: adding
each sub-batch apart cost 0.2-0.3x of bare inference in Python calls at one sample each.
End to end (`relu_doctor.scan`, 128 samples, batch 32, set-up included), scan / bare CPU
time on two threads by rows per sub-batch: 1 -> 1.03, 2 -> 1.00-1.03, 3 -> 1.05-1.11,
4 -> 1.09-1.16 (whole batches: 2.1-2.5).

The counters are the same either way: every partial is per (sample, neuron), and the
host adds the sub-batches' partials in order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx

from .onnx_instrument import POOL, REDUCE, SitePlan

SUB_BATCH_BYTES = 12 << 20  # the largest site activation of one sub-batch (MobileNetV2: 2 samples)
MEMORY_BOUND_MACS = 256  # multiply-adds per site output element below which a graph is split


def sub_batch_rows(model: onnx.ModelProto, shapes: dict[str, tuple[int, list | None]],
                   plans: Sequence[SitePlan], rows: int) -> int | None:
    """Rows per sub-batch for a batch of `rows`, or None to run whole batches: only when
    every site is reduced in the graph with a static first axis of `rows` (so the site's
    rows split with the batch), and the graph is memory-bound. Never with a relu RNN site:
    its output's first axis is the sequence, not the batch, and its gemms round differently
    for another batch size, so a split would not count what a whole batch counts."""
    if not plans or rows < 2:
        return None
    elements, largest = 0, 0
    for plan in plans:
        dims = shapes.get(plan.site.output, (0, None))[1]
        if plan.method not in (POOL, REDUCE) or plan.site.scope or plan.site.rnn_states or not dims \
                or dims[0] != rows:
            return None
        per_sample = int(np.prod(dims[1:], dtype=np.int64))
        elements += per_sample
        largest = max(largest, per_sample * np.dtype(np.float32).itemsize)
    macs = macs_per_sample(model.graph, shapes)
    if macs is None or macs >= MEMORY_BOUND_MACS * elements:
        return None
    sub = max(1, SUB_BATCH_BYTES // max(largest, 1))
    return sub if sub < rows else None


def macs_per_sample(graph: onnx.GraphProto, shapes: dict[str, tuple[int, list | None]]) -> float | None:
    """Multiply-adds per sample of the main graph's Conv, ConvTranspose, MatMul and Gemm nodes
    with constant weights (None when an output's shape is not known)."""
    weights = {t.name: list(t.dims) for t in graph.initializer}
    total = 0.0
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        w = weights.get(node.input[1])
        dims = shapes.get(node.output[0], (0, None))[1]
        if w is None or not w:
            continue
        if not dims or any(d is None for d in dims):
            return None
        out = float(np.prod(dims[1:], dtype=np.float64))
        if node.op_type == "Conv":
            per_output = float(np.prod(w[1:], dtype=np.float64))  # input channels per group x kernel
        elif node.op_type == "ConvTranspose":  # each input element meets C_out / group x kernel weights
            x = shapes.get(node.input[0], (0, None))[1]
            if not x or any(d is None for d in x):
                return None
            out, per_output = float(np.prod(x[1:], dtype=np.float64)), float(np.prod(w[1:], dtype=np.float64))
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            per_output = float(w[1] if trans_b else w[0])
        else:
            per_output = float(w[-2] if len(w) >= 2 else w[0])
        total += out * per_output
    return total


def workers(threads: int | None) -> int:
    """Parallel sub-batch runs: the intra-op threads asked for, else one per usable core."""
    if threads:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
