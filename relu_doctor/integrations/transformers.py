"""Hugging Face transformers: `DeadReLUCallback`, a TrainerCallback running relu_doctor.watch.

    from relu_doctor.integrations.transformers import DeadReLUCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[DeadReLUCallback(every=100, window=10)])

Each finished window's scalars join the Trainer's next log entry (`state.log_history`, and
the `logs` that callbacks after this one receive); a window asks the Trainer to log at its
step. The Trainer puts its report_to loggers (TensorBoard, W&B, ...) before the callbacks
it is given, so they would log each entry before these scalars join it: `attach` puts the
callback first instead, and every logger sees them:

    DeadReLUCallback(every=100).attach(trainer)     # instead of callbacks=[...]

With a breached threshold and stop_on_alert=True it sets control.should_training_stop.
Importing this module imports transformers; relu_doctor itself never does.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..report import Report
from ..training.sinks import integration_alert, scalars
from ..training.watch import DEFAULT_EVERY, DEFAULT_WINDOW, Watch


class DeadReLUCallback(TrainerCallback):
    """Dead ReLUs of the Trainer's model while it trains; `reports` holds one Report per window."""

    def __init__(self, every: int = DEFAULT_EVERY, window: int = DEFAULT_WINDOW, history: Any = None,
                 probe: Any = None, writer: Any = None, fail_dead_ratio: float | None = None,
                 fail_total_dead_ratio: float | None = None, on_alert: Any = None, stop_on_alert: bool = False,
                 **scan_options: Any) -> None:
        self.options = dict(every=every, window=window, history=history, probe=probe, writer=writer,
                            fail_dead_ratio=fail_dead_ratio, fail_total_dead_ratio=fail_total_dead_ratio,
                            **scan_options)
        self.on_alert = on_alert
        self.stop_on_alert = stop_on_alert
        self.watch: Watch | None = None
        self._pending: dict[str, float] = {}
        self._logged = 0  # reports already handed to the Trainer's log
        self._breached = False

    def attach(self, trainer: Any) -> DeadReLUCallback:
        """Make this the Trainer's first callback (moved there if it was given already), so
        its scalars join each log entry before the report_to loggers write it."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        return self

    @property
    def reports(self) -> list[Report]:
        return self.watch.reports if self.watch is not None else []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        self.watch = Watch(model, on_alert=self._alert, start_step=state.global_step, log_wandb=False,
                           **self.options)
        self.watch.start()
        self._collect(control)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.watch is None:
            return control
        while self.watch.steps < state.global_step:
            self.watch.step()
        self._collect(control)
        if self._breached and self.stop_on_alert:
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        if self._pending and logs is not None:
            logs.update(self._pending)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(self._pending)
            self._pending = {}
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.watch is not None:
            self.watch.close()
        return control

    def _collect(self, control: Any) -> None:
        assert self.watch is not None
        fresh = self.watch.reports[self._logged:]
        self._logged = len(self.watch.reports)
        for report in fresh:
            self._pending.update(scalars(report))
        if fresh:
            control.should_log = True

    def _alert(self, report: Report) -> None:
        self._breached = True
        integration_alert(report, self.on_alert, self.stop_on_alert)
