"""THE records: one per activation kind. Adding a kind means adding one record here.

A TorchDispatchMode sees composite ops either whole (relu6, prelu, rrelu, clip under
inference_mode) or decomposed (hardtanh, _prelu_kernel, rrelu_with_noise, clamp), so a
record lists both spellings. clamp / hardtanh / Clip are listed by every bounded kind
they can mean; each record's classifier keeps only its own answers.
"""

from __future__ import annotations

from .base import Kind, OnnxSpelling, TorchSpelling
from .classifiers import (
    always,
    aten_clamp,
    aten_clamp_min,
    aten_hardtanh,
    aten_leaky,
    aten_rrelu,
    aten_threshold,
    only,
    onnx_clip,
    onnx_leaky,
    onnx_thresholded,
    with_inplace,
)


def _bounded_torch(kind: str) -> dict:
    """The aten spellings of a bounded ReLU: clamp(x, 0[, hi]), clip, hardtanh(x, 0, hi)."""
    ops = {"clamp": only(kind, aten_clamp), "clip": only(kind, aten_clamp), "hardtanh": only(kind, aten_hardtanh)}
    return with_inplace(ops)


def _smooth(name: str, modules: tuple[str, ...], aten: tuple[str, ...], onnx: tuple[str, ...]) -> Kind:
    return Kind(name, grad_blocked=False, nonnegative=False, smooth=True,
                torch=TorchSpelling(modules, {op: always(name) for op in aten}),
                onnx=OnnxSpelling({op: always(name) for op in onnx}))


RECORDS: tuple[Kind, ...] = (
    Kind(
        "relu", grad_blocked=True, nonnegative=True,
        torch=TorchSpelling(
            modules=("ReLU", "Threshold"),
            aten={**with_inplace({"relu": always("relu"), "clamp_min": aten_clamp_min, "threshold": aten_threshold}),
                  **_bounded_torch("relu")},
            functions=("torch.relu", "torch.relu_", "torch.nn.functional.relu", "torch.nn.functional.relu_"),
            methods=("relu", "relu_"),
        ),
        # Max(x, 0) needs the graph around it: onnx_patterns/max_zero.py
        onnx=OnnxSpelling({"Relu": always("relu"), "Clip": only("relu", onnx_clip),
                           "ThresholdedRelu": onnx_thresholded}),
    ),
    Kind(
        "relu6", grad_blocked=True, nonnegative=True, bounded=True, upper=6.0,
        torch=TorchSpelling(modules=("ReLU6", "Hardtanh"),
                            aten={**with_inplace({"relu6": always("relu6")}), **_bounded_torch("relu6")},
                            functions=("torch.nn.functional.relu6",)),
        onnx=OnnxSpelling({"Clip": only("relu6", onnx_clip)}),
    ),
    Kind(
        "clip", grad_blocked=True, nonnegative=True, bounded=True, params=("max",),
        # also the upper clamp that keeps a patched relu6 / clip site's bound
        torch=TorchSpelling(aten=_bounded_torch("clip"), writer="torch.clamp"),
        onnx=OnnxSpelling({"Clip": only("clip", onnx_clip)}, writer="Clip"),
    ),
    Kind(
        "leaky_relu", grad_blocked=False, nonnegative=False, params=("negative_slope",),
        torch=TorchSpelling(modules=("LeakyReLU",), aten=with_inplace({"leaky_relu": aten_leaky}),
                            writer="torch.nn.functional.leaky_relu"),
        onnx=OnnxSpelling({"LeakyRelu": onnx_leaky}, writer="LeakyRelu"),
    ),
    Kind(
        "prelu", grad_blocked=False, nonnegative=False,
        torch=TorchSpelling(modules=("PReLU",), aten={"prelu": always("prelu"), "_prelu_kernel": always("prelu")},
                            writer="torch.prelu"),
        onnx=OnnxSpelling({"PRelu": always("prelu")}, writer="PRelu"),
    ),
    Kind(
        "rrelu", grad_blocked=False, nonnegative=False, params=("lower", "upper"),
        torch=TorchSpelling(modules=("RReLU",),
                            aten=with_inplace({"rrelu": aten_rrelu, "rrelu_with_noise": aten_rrelu})),
    ),
    _smooth("elu", ("ELU",), ("elu", "elu_"), ("Elu",)),
    _smooth("selu", ("SELU",), ("selu", "selu_"), ("Selu",)),
    _smooth("celu", ("CELU",), ("celu", "celu_"), ("Celu",)),
    _smooth("gelu", ("GELU",), ("gelu", "gelu_"), ("Gelu",)),
    _smooth("silu", ("SiLU",), ("silu", "silu_"), ()),  # ONNX: x * Sigmoid(x), onnx_patterns/silu.py
    _smooth("hardswish", ("Hardswish",), ("hardswish", "hardswish_"), ("HardSwish",)),
    _smooth("mish", ("Mish",), ("mish", "mish_"), ("Mish",)),
    _smooth("softplus", ("Softplus",), ("softplus",), ("Softplus",)),
)
