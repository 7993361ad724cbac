"""ONNX models exported with a fixed batch (often 1): relax the batch dimension when the graph
allows it, so a scan runs in batches instead of one sample at a time.

Exporters bake the example's batch size into the input and output shapes, and sometimes
into the graph itself (a Reshape to [1, -1]). Rewriting the declared shapes is easy; what
decides is whether the graph still computes each sample on its own. That is checked, not
assumed: a batch of 2x the fixed size must give the outputs that the original gives on
each fixed-size part, or the relaxed copy is dropped.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_session import make_session

BATCH_DIM = "batch"


def relax_batch(proto: onnx.ModelProto, fixed: int, rows: list[np.ndarray], providers: list[Any],
                names: list[str]) -> tuple[onnx.ModelProto | None, str]:
    """(a copy of `proto` with a symbolic batch dimension, "") when it computes the same,
    else (None, why not). `rows`: 2 * fixed rows of real inputs, in the order of `names`."""
    relaxed = _symbolic_batch(proto, fixed)
    if relaxed is None:
        return None, "not every input and output has it as its first dimension"
    try:
        batched = make_session(relaxed, providers).run(None, dict(zip(names, rows)))
    except Exception as e:  # onnxruntime: a shape constant in the graph pins the batch
        return None, f"the graph pins it ({_first_line(e)})"
    original = make_session(proto, providers)
    parts = [original.run(None, {n: a[i:i + fixed] for n, a in zip(names, rows)})
             for i in range(0, len(rows[0]), fixed)]
    for k, got in enumerate(batched):
        want = np.concatenate([p[k] for p in parts])
        if got.shape != want.shape or not _close(got, want):
            return None, "the graph mixes the samples of a batch (a shape constant pins the batch)"
    return relaxed, ""


def _symbolic_batch(proto: onnx.ModelProto, fixed: int) -> onnx.ModelProto | None:
    relaxed = copy.deepcopy(proto)
    graph = relaxed.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    for value in [*inputs, *graph.output]:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value != fixed):
            return None
        dims[0].Clear()
        dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # intermediate shapes recorded at export carry the old batch
    _free_reshapes(graph, fixed)
    return relaxed


def _free_reshapes(graph: onnx.GraphProto, fixed: int) -> None:
    """A Reshape to a constant shape that starts with the batch (`x.view(x.size(0), -1)`
    exported with a static batch: [1, 100]) copies that dimension from its input instead
    (0 in ONNX's Reshape). A guess at what the export meant; the check in relax_batch
    decides whether it holds."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]])
        if shape.ndim != 1 or len(shape) < 2 or shape[0] != fixed:
            continue
        allowzero = [a for a in node.attribute if a.name == "allowzero" and a.i == 1]
        if allowzero and 0 in shape:
            continue  # a real zero-sized dimension
        for a in allowzero:  # no 0 in the shape: allowzero changed nothing (the dynamo exporter sets it)
            a.i = 0
        freed = shape.copy()
        freed[0] = 0
        name = f"{node.input[1]}__batch_{node.name or len(graph.initializer)}"
        graph.initializer.append(numpy_helper.from_array(freed, name))
        node.input[1] = name


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    if got.dtype.kind not in "fc":
        return bool(np.array_equal(got, want))
    # Batched kernels may sum in another order: float32 rounding, not different math
    return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]
