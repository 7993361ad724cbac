"""Rewrites for the torch formats (each returns a new model) and how patched models are written.

- eager nn.Module (pickled module, state dict / safetensors + --arch): torch_eager.py
- torch.export program (.pt2): torch_export.py
- TorchScript: refused. A scripted or traced archive holds no Python to trace again, its
  per-class graphs are shared by every instance of a class (patching one block's call
  would patch all of them), and a rewritten graph saved inlined loses the module
  hierarchy that names its sites. The error names the formats that can be patched.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..errors import UserError
from ..formats import ONNX, PT2, TORCHSCRIPT
from .plan import PatchPlan

ONNX_OPSET = 17



def torchscript_refusal() -> UserError:
    return UserError(
        "TorchScript archives cannot be patched per call site: their compiled graphs are shared by every "
        "instance of a module class, and a rewritten archive loses the module paths that name its sites",
        "Patch the model as a pickled module or a state dict with --arch (add --to torchscript to get "
        "TorchScript back), or as a torch.export .pt2 or an ONNX file.",
    )


def patch_torch(obj: Any, plan: PatchPlan, example: Sequence[torch.Tensor] | None,
                include_smooth: bool = False) -> tuple[Any, list[str]]:
    """A patched copy of a torch model object, and warnings."""
    from .torch_eager import patch_module
    from .torch_export import patch_exported

    if isinstance(obj, torch.export.ExportedProgram):
        return patch_exported(obj, plan, example, include_smooth), []
    if isinstance(obj, torch.jit.ScriptModule):
        raise torchscript_refusal()
    if isinstance(obj, nn.Module):
        if example is None:
            raise UserError("patching a module needs example inputs", "Pass --data or --input-shape.")
        return patch_module(obj, plan, example, include_smooth)
    raise UserError(f"cannot patch a {type(obj).__name__}",
                    "Pass an nn.Module, an ExportedProgram or an onnx.ModelProto.")


def example_inputs(arrays: Sequence[np.ndarray], model: Any) -> list[torch.Tensor]:
    """Tensors for a few sample rows, in the model's floating dtype."""
    dtype = _float_dtype(model)
    out = []
    for a in arrays:
        t = torch.tensor(np.asarray(a))
        out.append(t.to(dtype) if t.is_floating_point() else t)
    return out


def _float_dtype(model: Any) -> torch.dtype:
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    tensors = [*model.parameters(), *model.buffers()] if isinstance(model, nn.Module) else []
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def convert(module: nn.Module, to: str, example: Sequence[torch.Tensor],
            names: Sequence[str] | None = None) -> tuple[Any, list[str]]:
    """A patched eager module in the format asked for with --to (ONNX: a ModelProto)."""
    from .torch_export import export_module, script_module

    if to == PT2:
        return export_module(module, example)
    if to == TORCHSCRIPT:
        return script_module(module, example)
    if to == ONNX:
        return onnx_proto(module, example, names), []
    return module, []


def onnx_proto(module: nn.Module, example: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> Any:
    """The module exported to ONNX (TorchScript-based exporter, dynamic batch), in memory."""
    import onnx

    names = list(names or [f"input{i}" if len(example) > 1 else "input" for i in range(len(example))])
    with torch.no_grad():
        count = len(tree_flatten(module.eval()(*example))[0])
    # Named outputs: without them the exporter reads `module.graph` as a TorchScript graph,
    # and a patched module whose root is an fx GraphModule has an fx graph there.
    outputs = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            # a file object works: the stub says path only
            torch.onnx.export(module, tuple(example), buffer, dynamo=False,  # type: ignore[arg-type]
                              input_names=names, output_names=outputs,
                              dynamic_axes={n: {0: "batch"} for n in names + outputs}, opset_version=ONNX_OPSET)
    except Exception as e:
        from ..errors import summarize_exception

        raise UserError(f"cannot export the patched model to ONNX: {summarize_exception(e)}",
                        "Write another format with --to.") from None
    return onnx.load_from_string(buffer.getvalue())


def to_bytes(obj: Any, fmt: str, names: list[tuple[str, str]] | None = None) -> bytes:
    """A torch model object saved in `fmt`, in memory (the caller writes the bytes), with the
    report's site names where the patch renamed sites (site_names.py)."""
    from ..site_names import ATTRIBUTE, EXTRA_FILE, to_json

    extra = {EXTRA_FILE: to_json(names)} if names else {}
    buffer = io.BytesIO()
    if fmt == PT2:
        torch.export.save(obj, buffer, extra_files=extra)
    elif fmt == TORCHSCRIPT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(obj, buffer, _extra_files=extra)
    else:
        if names:
            setattr(obj, ATTRIBUTE, to_json(names))  # our own patched copy
        torch.save(obj, buffer)
    return buffer.getvalue()
