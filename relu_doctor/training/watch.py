"""`watch()`: dead ReLUs measured while a model trains, in windows, with one report per window.

Passive mode measures the loop's own forward passes on steps k*every ... k*every+window-1
(LiveCapture: reduced on the device as they are made, no extra pass, no host sync per
step). At the end of a window the counters are read once (and all-reduced under torchrun),
and one Report goes to the sinks. Probe mode instead scans a fixed batch every `every`
steps (and once on entering), in eval mode under inference_mode, leaving the model as it was.

Forward passes run without gradients (an evaluation under no_grad / inference_mode inside
the loop) are not counted: a window holds training data only.

Steps count optimizer steps: the forward passes between the n-th and the (n+1)-th call of
`step()` belong to step n (0-based); a probe at step n sees the weights after n updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import gates as gating
from ..errors import UserError
from ..option_values import globs
from ..report import ModelInfo, Report, SampleInfo, Settings, Site
from ..stats import DEFAULT_TAU, small_sample_warning
from .sinks import Sinks

# benchmarks/watch_overhead.py (benchmarks/README.md): a step inside a window costs within
# a few percent of a plain one on CPU (ResNet-18-sized CNN, transformer MLP, batch 32), and
# closing a window (one sync, one Report) well under a step, so 10 steps in 100 cost under
# 1% on average while 10 x batch samples per window keep the detection floor low.
DEFAULT_EVERY = 100
DEFAULT_WINDOW = 10


class Watch:
    """Context manager / object: call `step()` once per optimizer step; `reports` grows per window."""

    def __init__(
        self,
        model: Any,
        every: int = DEFAULT_EVERY,
        window: int = DEFAULT_WINDOW,
        history: Any = None,
        probe: Any = None,
        writer: Any = None,
        fail_dead_ratio: float | None = None,
        fail_total_dead_ratio: float | None = None,
        on_alert: Callable[[Report], Any] | str | None = None,
        *,
        tau: float = DEFAULT_TAU,
        neuron_axis: str = "auto",
        include_smooth: bool = False,
        neuron_extremes: bool = False,
        select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        start_step: int = 0,
        log_wandb: bool = True,
        root_hooks: bool = True,
    ) -> None:
        import torch

        from ..api import check_neuron_axis, check_tau
        from ..backends.torch_live import LiveCapture
        from ..distributed import training_world

        if not isinstance(model, torch.nn.Module):
            raise UserError(f"watch() needs an nn.Module (got {type(model).__name__})")
        if not isinstance(every, int) or every < 1:
            raise UserError(f"every must be a positive number of steps (got {every!r})")
        if probe is None and (not isinstance(window, int) or not 1 <= window <= every):
            raise UserError(f"window must be between 1 and every={every} steps (got {window!r})")
        tau = check_tau(tau)
        check_neuron_axis(neuron_axis)
        fail_dead_ratio = gating.check_threshold("fail_dead_ratio", fail_dead_ratio)
        fail_total_dead_ratio = gating.check_threshold("fail_total_dead_ratio", fail_total_dead_ratio)
        self.model = model
        self.every, self.window = every, window
        self.probe = probe
        self.tau, self.neuron_axis, self.include_smooth = tau, neuron_axis, include_smooth
        self.neuron_extremes = neuron_extremes  # per-neuron max/min in every report (timeline --neurons)
        self.select, self.ignore = globs("select", select), globs("ignore", ignore)
        self.fail_dead_ratio, self.fail_total_dead_ratio = fail_dead_ratio, fail_total_dead_ratio
        self.world = training_world()
        self.sinks = Sinks(history, writer, on_alert, self.world.is_writer, log_wandb)
        self.root_hooks = root_hooks  # False: the owner brackets passes (capture.enter_pass / exit_pass)
        self.capture = LiveCapture(model, neuron_axis, include_smooth, neuron_extremes=neuron_extremes)
        self.reports: list[Report] = []
        self.steps = start_step  # optimizer steps done so far
        self._window_start: int | None = None
        self.probe_seconds: list[float] = []
        self._closed = False

    @property
    def mode(self) -> str:
        return "probe" if self.probe is not None else "passive"

    def __enter__(self) -> Watch:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # the loop failed: take the hooks away, report nothing half-measured
            self.capture.detach()
            self._window_start = None
            self._closed = True

    def start(self) -> None:
        """Begin measuring at the current step (entering the context does this)."""
        if self.probe is not None:
            self._run_probe()
        else:
            self._maybe_open()

    def step(self) -> Report | None:
        """Mark one optimizer step done; returns the report of a window (or probe) it finished."""
        if self._closed:
            raise UserError("step() after the watch was closed")
        self.steps += 1
        report = None
        if self.probe is not None:
            if self.steps % self.every == 0:
                report = self._run_probe()
        else:
            if self._window_start is not None and self.steps - self._window_start >= self.window:
                report = self._close_window(self.steps - 1)
            self._maybe_open()
        return report

    def close(self) -> None:
        """Finish: a window cut short by the end of training is reported for the steps it saw."""
        if self._closed:
            return
        self._closed = True
        if self._window_start is not None:
            if self.steps > self._window_start:
                self._close_window(self.steps - 1)
            else:
                self.capture.detach()
                self._window_start = None

    # ---- passive ----------------------------------------------------------------------

    def _maybe_open(self) -> None:
        if self._window_start is None and self.steps % self.every == 0:
            self._window_start = self.steps
            self.capture.attach(self.root_hooks)

    def _close_window(self, last: int) -> Report:
        from ..distributed import all_reduce_count, all_reduce_sites

        first = self._window_start
        assert first is not None
        self._window_start = None
        warnings = self.capture.warnings
        captured = all_reduce_sites(self.capture.detach(), self.world)
        samples = all_reduce_count(self.capture.samples, self.world)
        sample = {
            "source": "training", "samples": samples, "batch_size": self.capture.batch_size, "seed": None,
            "inputs": [], "steps": [first, last],
            "forward_passes": all_reduce_count(self.capture.forward_passes, self.world),  # over the ranks, as samples
        }
        if self.world.size > 1:
            sample["ranks"] = self.world.size
        return self._finish(captured, sample, warnings)

    # ---- probe ------------------------------------------------------------------------

    def _run_probe(self) -> Report:
        from ..api import scan
        from ..backends.torch_live import unwrap
        from .state import preserved

        model = unwrap(self.model)
        device = next((t.device for t in (*model.parameters(), *model.buffers())), None)
        began = time.perf_counter()
        with preserved(model):
            scanned = scan(model, self.probe, tau=self.tau, neuron_axis=self.neuron_axis, warn=False,
                           include_smooth=self.include_smooth, neuron_extremes=self.neuron_extremes,
                           device=str(device) if device is not None else "cpu")
        self.probe_seconds.append(time.perf_counter() - began)
        sample = dict(scanned.sample, source="probe", steps=[self.steps, self.steps])
        return self._finish(scanned.sites, sample, scanned.warnings)

    # ---- both -------------------------------------------------------------------------

    def _finish(self, captured: Sequence[Any], sample: dict[str, Any], warnings: list[str]) -> Report:
        sites = [Site(i, s.name, s.kind, s.op, s.params, s.shape, s.axis, s.counters, self.tau)
                 for i, s in enumerate(captured)]
        notes = list(warnings)
        small = small_sample_warning(int(sample["samples"]))
        if small and small not in notes:
            notes.append(small)
        report = Report(
            model=ModelInfo.from_dict({"path": None, "format": "module", "sha256": None,
                                       "class": type(self.model).__name__}),
            sample=SampleInfo.from_dict(sample),
            settings=Settings.from_dict({
                "tau": self.tau, "neuron_axis": self.neuron_axis, "include_smooth": self.include_smooth,
                "select": self.select, "ignore": self.ignore, "every": self.every,
                "window": self.window if self.probe is None else None, "mode": self.mode}),
            sites=sites,
            warnings=notes,
        )
        report.gates = self._gate(sites, report)
        self.reports.append(report)
        self.sinks.emit(report)
        return report

    def _gate(self, sites: list[Site], report: Report) -> Any:
        try:
            return gating.gate(sites, self.select, self.ignore, self.fail_dead_ratio, self.fail_total_dead_ratio)
        except UserError as e:  # a --select matching nothing must not stop a training run
            report.warnings.append(str(e))
            return gating.evaluate(gating.selected(sites, (), self.ignore), self.fail_dead_ratio,
                                   self.fail_total_dead_ratio)


def watch(model: Any, every: int = DEFAULT_EVERY, window: int = DEFAULT_WINDOW, history: Any = None,
          probe: Any = None, writer: Any = None, fail_dead_ratio: float | None = None,
          fail_total_dead_ratio: float | None = None, on_alert: Callable[[Report], Any] | str | None = None,
          **scan_options: Any) -> Watch:
    """Watch `model` while it trains (SPEC 12). Use as a context manager, calling `.step()` per optimizer step.

    `on_alert`: called with the report when a threshold is breached; "warn" (default) or
    "raise" (DeadReLUAlert). `scan_options`: tau, neuron_axis, include_smooth, select, ignore,
    neuron_extremes (each report also keeps every neuron's max and min, for `timeline --neurons`).
    """
    return Watch(model, every, window, history, probe, writer, fail_dead_ratio, fail_total_dead_ratio, on_alert,
                 **scan_options)
