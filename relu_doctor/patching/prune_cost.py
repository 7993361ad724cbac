"""What a model costs: weights, multiply-adds per input, and measured inference time.

Multiply-adds are counted for one input (batch 1) on the layers that dominate (Conv,
Linear / Gemm, MatMul); FLOPs are twice that, as is usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_weights(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.export.ExportedProgram):
        tensors = list(obj.state_dict.values()) + list(obj.constants.values())
    else:
        tensors = list(obj.state_dict().values())
    return int(sum(t.numel() for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()))


def torch_macs(obj: Any, inputs: list[Any]) -> int:
    """Multiply-adds of one forward pass on `inputs` (tensors with a batch of 1)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    module = obj.module() if isinstance(obj, torch.export.ExportedProgram) else obj
    total = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            op = func._overloadpacket.__name__
            if op in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution") and isinstance(out, torch.Tensor):
                total[0] += out.numel() * args[1][0].numel()
            elif op in ("linear", "mm", "addmm", "bmm", "matmul") and isinstance(out, torch.Tensor):
                a = args[1] if op == "addmm" else args[0]
                total[0] += out.numel() * a.shape[-1]
            return out

    with torch.inference_mode(), Count():
        module(*inputs)
    return total[0]


def onnx_weights(model: Any) -> int:
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer if t.data_type in floats))


def onnx_macs(model: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-adds of one input: Conv, Gemm and MatMul, from shape inference at batch 1."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for value in m.graph.input:
        if value.name in shapes and value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims, (1, *shapes[value.name])):
                d.ClearField("dim_param")
                d.dim_value = size
    del m.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(m)
    g = inferred.graph
    known = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in [*g.value_info, *g.output, *g.input] if v.type.HasField("tensor_type")}
    known.update({t.name: list(t.dims) for t in g.initializer})
    total = 0
    for node in g.node:
        out = known.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        size = int(np.prod(out, dtype=np.int64))
        if node.op_type == "Conv":
            w = known.get(node.input[1])
            total += size * int(np.prod(w[1:], dtype=np.int64)) if w else 0
        elif node.op_type in ("Gemm", "MatMul"):
            a = known.get(node.input[0])
            if a:
                trans = any(at.name == "transA" and at.i for at in node.attribute)
                total += size * (a[0] if trans else a[-1])
    return total
