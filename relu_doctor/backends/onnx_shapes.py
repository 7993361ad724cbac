"""Static shapes of an ONNX model's tensors for one batch, from onnx's shape inference.

The inference runs on a copy without the large weights (`without_weights`): it needs
their dims and types, not their data.
"""

from __future__ import annotations

import onnx
from google.protobuf.message import Message
from onnx import shape_inference

_SMALL_TENSOR = 4096  # bytes: shape and index constants, which data propagation reads


def static_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]]) -> dict[str, tuple[int, list | None]]:
    """tensor name -> (element type, dims or None), from shape inference with the batch's
    concrete input shapes (so a symbolic batch or image size becomes a number)."""
    skeleton = without_weights(model)
    for inp in skeleton.graph.input:
        if inp.name in input_shapes and inp.type.HasField("tensor_type"):
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, input_shapes[inp.name]):
                d.Clear()
                d.dim_value = int(size)
    try:
        inferred = shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:  # an op onnx cannot infer, a model too big: fall back to raw capture
        return {}
    found: dict[str, tuple[int, list | None]] = {}
    for graph in _graphs(inferred.graph):
        for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                continue
            dims = None
            if t.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            found[vi.name] = (t.elem_type, dims)
    return found


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` for shape inference, its large initializers with dims and type but no
    data. Built field by field: copying the whole model and clearing the weights afterwards
    would hold a second copy of them (46 MB on a ResNet-18) until the copy is freed."""
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    for init in model.graph.initializer:
        if init.HasField("raw_data") and init.ByteSize() > _SMALL_TENSOR:
            _copy_fields(init, skeleton.graph.initializer.add(), skip="raw_data")
        else:
            skeleton.graph.initializer.add().CopyFrom(init)
    return skeleton


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    """Copy every set field of `source` but `skip` into `target` (of the same type)."""
    for descriptor in source.DESCRIPTOR.fields:
        name = descriptor.name
        if name == skip:
            continue
        repeated = (descriptor.is_repeated if hasattr(descriptor, "is_repeated")
                    else descriptor.label == descriptor.LABEL_REPEATED)
        if repeated:
            if len(getattr(source, name)):
                getattr(target, name).extend(getattr(source, name))
        elif source.HasField(name):
            if descriptor.type == descriptor.TYPE_MESSAGE:
                getattr(target, name).CopyFrom(getattr(source, name))
            else:
                setattr(target, name, getattr(source, name))


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out += _graphs(attr.g)
    return out
