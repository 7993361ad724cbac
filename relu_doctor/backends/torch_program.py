"""Run a torch.export program without `ExportedProgram.module()`, where that is exact.

`program.module()` builds a new GraphModule on every call: it deep-copies the graph,
registers every weight as an attribute, generates and compiles Python code and a guard
function. For MobileNetV2 that is 75-260 ms (the spread is the garbage collector, which
the 4000 new objects wake), 4-12% of a 128-sample scan, paid on every scan
(benchmarks/README.md, "What bounds MobileNetV2"). The program's own `graph_module`
already runs: it takes the lifted weights, then the user's inputs, as flat arguments
(the calling convention `ExportedProgram._graph_module_flat_inputs` documents). So a
plain program runs as `graph_module(*weights, *inputs)`, the same aten calls in the
same order as the module `program.module()` would build.

Plain means: only weights, buffers and constant tensors are lifted (no effect tokens or
custom objects), every output is a user output (no buffer or input mutation, which
`module()` copies back), the inputs are positional tensors, and each input dim is either
a number or a plain symbol (a `Dim`) with a range, and export recorded no other guard.
Those are the guards `module()` checks (torch._export.utils._check_input_constraints_for_graph:
the shape, one value per symbol, the symbol's range); they are checked here before each
call. An input that fails them, and every other program, runs through `program.module()`
(built on first use), so it fails or runs exactly as before.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind, OutputKind

_LIFTED = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


class ProgramForward:
    """`forward(*inputs)` of an ExportedProgram, as `program.module()(*inputs)` gives it."""

    def __init__(self, program: torch.export.ExportedProgram, device: torch.device) -> None:
        self._program = program
        self._device = device
        self._module: Any = None
        plan = _plain_plan(program)
        self.direct = plan is not None  # False: every call goes through program.module()
        if plan is None:
            self._module_forward()
            return
        state, self._dims = plan
        self._ranges = program.range_constraints
        self._state = tuple(t.to(device) for t in state) if device.type != "cpu" else tuple(state)
        self._graph_module = program.graph_module
        self._out_spec = program.call_spec.out_spec

    def __call__(self, *inputs: Any) -> Any:
        if not self.direct or not self._fits(inputs):
            return self._module_forward()(*inputs)
        flat = self._graph_module(*self._state, *inputs)
        return pytree.tree_unflatten(list(flat), self._out_spec) if self._out_spec is not None else flat

    def instrumented(self) -> Any:
        """This forward on an instrumented copy of the graph (a torch_replay.Instrumented);
        None where it runs through `program.module()` or the copy would not be exact. An
        input that fails the guards runs the plain module, whose missing points the replay
        reports."""
        from .torch_replay import Instrumented, instrumented_graph_module

        copied = instrumented_graph_module(self._graph_module) if self.direct else None
        if copied is None:
            return None
        forward = copy.copy(self)
        forward._graph_module, originals = copied
        return Instrumented(forward, originals)

    def _fits(self, inputs: tuple[Any, ...]) -> bool:
        """The program's guards: as many tensors as it takes, each dim its number or, for a
        symbol, the same size wherever the symbol stands, within the symbol's range."""
        if len(inputs) != len(self._dims):
            return False
        sizes: dict[Any, int] = {}
        for x, dims in zip(inputs, self._dims):
            if not isinstance(x, torch.Tensor) or x.dim() != len(dims):
                return False
            for size, dim in zip(x.shape, dims):
                if isinstance(dim, int):
                    if size != dim:
                        return False
                elif sizes.setdefault(dim, size) != size:
                    return False
        for symbol, size in sizes.items():
            bounds = self._ranges[symbol]
            if not (bool(size >= bounds.lower) and bool(size <= bounds.upper)):
                return False
        return True

    def _module_forward(self) -> Any:
        if self._module is None:
            module = self._program.module()
            self._module = module.to(self._device) if self._device.type != "cpu" else module
        return self._module


def _plain_plan(program: torch.export.ExportedProgram) -> tuple[list[torch.Tensor], list[tuple[Any, ...]]] | None:
    """(the lifted tensors in the graph's order, each user input's dims: numbers and
    symbols), or None when the program is not plain (see the module's docstring)."""
    if getattr(program, "_guards_code", None) != []:
        return None  # guards beyond the input shapes (or a torch that keeps them elsewhere)
    signature = program.graph_signature
    if any(spec.kind != OutputKind.USER_OUTPUT for spec in signature.output_specs):
        return None
    specs = signature.input_specs
    kinds = [spec.kind for spec in specs]
    users = kinds.count(InputKind.USER_INPUT)
    # the calling convention: every lifted input first, then the user's inputs
    if any(k not in _LIFTED for k in kinds[: len(kinds) - users]) or \
            any(k != InputKind.USER_INPUT for k in kinds[len(kinds) - users:]):
        return None
    in_spec = program.call_spec.in_spec
    if in_spec is None or in_spec != pytree.tree_structure((tuple(range(users)), {})):
        return None  # keyword, nested or non-tensor inputs
    state = []
    for spec in specs[: len(specs) - users]:
        value = _lifted_value(program, spec)
        if not isinstance(value, torch.Tensor):
            return None
        state.append(value)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(specs):
        return None
    shapes = []
    for node in placeholders[len(specs) - users:]:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return None  # a non-tensor input
        dims = tuple(_dim(d, program.range_constraints) for d in val.shape)
        if any(d is None for d in dims):
            return None
        shapes.append(dims)
    return state, shapes


def _dim(d: Any, ranges: dict[Any, Any]) -> Any:
    """A static dim as its int, a dynamic one as its sympy symbol; None for anything else
    (a derived dim such as 2 * batch, whose guard this module does not check)."""
    if isinstance(d, int):
        return int(d)
    expr = getattr(getattr(d, "node", None), "expr", None)
    if expr is not None and getattr(expr, "is_Symbol", False) and expr in ranges:
        return expr
    return None


def _lifted_value(program: torch.export.ExportedProgram, spec: Any) -> Any:
    """Where `program.module()` takes a lifted input's value from (torch's _unlift)."""
    target = spec.target
    if spec.kind == InputKind.CONSTANT_TENSOR or getattr(spec, "persistent", None) is False:
        return program.constants.get(target)
    if target in program.state_dict:
        return program.state_dict[target]
    return program.constants.get(target)


def program_dtype(program: torch.export.ExportedProgram) -> torch.dtype:
    """The dtype of its first floating parameter, else buffer (as of `program.module()`)."""
    signature = program.graph_signature
    for name in (*signature.parameters, *signature.buffers):
        value = program.state_dict.get(name, program.constants.get(name))
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    return torch.float32
