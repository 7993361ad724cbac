"""Capture on a live eager module: the forward passes its owner runs, in any mode.

The scan drives the model itself (`capture` in torch.py); a training loop drives its own
forward passes, in training mode and with gradients. `LiveCapture` attaches the same
dispatch mode and module tracker to the module with forward hooks, so every forward
pass the owner runs while it is attached is reduced into the same device counters, and
nothing else: no extra pass, no host sync, nothing kept but the counters.

Autograd is untouched: the mode runs below autograd, calls each op exactly as it was
called, and only reads the activations (their reductions are not recorded).
"""

from __future__ import annotations

from typing import Any

import torch

from . import CapturedSite
from .torch import _CaptureMode
from .torch_eager import force_eager, restore, uncompiled
from .torch_naming import EagerModuleTracker


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel and torch.compile wrappers, in
    any nesting (its names are the model's)."""
    while True:
        inner = getattr(model, "module", None)
        if isinstance(inner, torch.nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = inner
        elif (inner := uncompiled(model)) is not model:
            model = inner
        else:
            return model


class LiveCapture:
    """Counters of every activation site over the forward passes run while attached."""

    def __init__(self, model: torch.nn.Module, neuron_axis: str = "auto", include_smooth: bool = False,
                 grad_only: bool = True, neuron_extremes: bool = False) -> None:
        self.model = model
        # A forward without gradients inside a training loop is an evaluation (no_grad,
        # inference_mode): with grad_only its data stays out of the training counters.
        self.grad_only = grad_only
        self._skipping = 0  # depth inside a skipped forward
        self.named = unwrap(model)  # sites are named by the model's own module paths
        self.neuron_axis = neuron_axis
        self.include_smooth = include_smooth
        self.neuron_extremes = neuron_extremes
        self._mode: _CaptureMode | None = None
        self._tracker: EagerModuleTracker | None = None
        self._handles: list[Any] = []
        self._depth = 0  # a forward that calls the root forward again stays one pass
        self._stance: Any = None  # torch_eager.force_eager's, while attached
        self.forward_passes = 0
        self.samples = 0
        self.batch_size = 0

    @property
    def attached(self) -> bool:
        return self._mode is not None

    def attach(self, root_hooks: bool = True) -> None:
        """Start counting (fresh counters).

        With root_hooks, every call of the model's forward is one pass. Without, the owner
        brackets each pass with enter_pass / exit_pass: a Lightning training_step may call
        submodules and never the LightningModule's own forward."""
        if self._mode is not None:
            return
        # Compiled code dispatches no aten op for the mode to see, and a module compiled in
        # place runs the hooks below inside its compiled call: while attached (a window),
        # compiled code runs eagerly. Set here, between steps, before any compiled call starts.
        self._stance = force_eager()
        self._tracker = EagerModuleTracker(self.named)
        self._mode = _CaptureMode(self._tracker, self.neuron_axis, self.include_smooth, self.neuron_extremes)
        self.forward_passes = self.samples = self.batch_size = 0
        if root_hooks:
            self._handles = [
                self.model.register_forward_pre_hook(self._enter, with_kwargs=True),
                self.model.register_forward_hook(self._leave, always_call=True),
            ]

    def enter_pass(self, rows: int) -> None:
        """Count what runs from here to exit_pass as one pass over a batch of `rows` samples."""
        mode = self._mode
        if mode is None:
            return
        self._depth += 1
        if self._depth > 1:
            return
        mode.start_batch(rows, rows)
        self.forward_passes += 1
        self.samples += rows
        self.batch_size = max(self.batch_size, rows)
        mode.__enter__()

    def exit_pass(self) -> None:
        if self._mode is None or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self._mode.__exit__(None, None, None)
            self._mode.finish_pass()  # settles calls that wait for what follows them (hand-written hard-swish)

    def detach(self) -> list[CapturedSite]:
        """Stop counting and return the sites met since `attach`, in first-execution order.

        Reading the counters is the one host sync of the whole window."""
        mode = self._mode
        self._remove()
        if mode is None:
            return []
        return [CapturedSite(s.name, s.kind, s.op, s.params, s.shape, s.axis, s.acc.counters())
                for s in mode.sites.values()]

    @property
    def warnings(self) -> list[str]:
        return list(self._mode.warnings) if self._mode is not None else []

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._tracker is not None:
            self._tracker.close()
        if self._mode is not None and self._depth:  # detached inside a forward: leave the mode
            self._mode.__exit__(None, None, None)
        restore(self._stance)
        self._stance = None
        self._depth = self._skipping = 0
        self._tracker = None
        self._mode = None

    def _enter(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if self._skipping or (self._depth == 0 and self.grad_only and not torch.is_grad_enabled()):
            self._skipping += 1
            return
        self.enter_pass(batch_rows(args, kwargs) if self._depth == 0 else 0)

    def _leave(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._skipping:
            self._skipping -= 1
            return
        self.exit_pass()


def batch_rows(args: Any, kwargs: dict) -> int:
    """The batch size of a forward call: the first axis of its first tensor argument (0: unknown)."""
    args = args if isinstance(args, (tuple, list)) else (args,)
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
        if isinstance(value, dict):  # a batch dict passed as one argument
            found = batch_rows((), value)
            if found:
                return found
    return 0
