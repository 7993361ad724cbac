"""PyTorch Lightning: `DeadReLUMonitor`, a Callback running relu_doctor.watch inside `Trainer.fit`.

    from relu_doctor.integrations.lightning import DeadReLUMonitor
    trainer = L.Trainer(callbacks=[DeadReLUMonitor(every=100, window=10, fail_dead_ratio=0.5, stop_on_alert=True)])

Passive windows measure the training_step's forward work: the capture is entered at
on_train_batch_start and left at on_before_backward, so a training_step that calls
submodules (self.encoder(x)) rather than the LightningModule's forward is measured too.
Scalars go to every logger of the trainer (rank 0), at the trainer's global step.
Importing this module imports lightning (the `lightning` extra); relu_doctor itself never does.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl  # type: ignore[no-redef]

from ..report import Report
from ..training.sinks import integration_alert, scalars
from ..training.watch import DEFAULT_EVERY, DEFAULT_WINDOW, Watch


class DeadReLUMonitor(pl.Callback):
    """Dead ReLUs of the LightningModule while it trains; `reports` holds one Report per window."""

    def __init__(self, every: int = DEFAULT_EVERY, window: int = DEFAULT_WINDOW, history: Any = None,
                 probe: Any = None, writer: Any = None, fail_dead_ratio: float | None = None,
                 fail_total_dead_ratio: float | None = None, on_alert: Any = None, stop_on_alert: bool = False,
                 **scan_options: Any) -> None:
        super().__init__()
        self.options = dict(every=every, window=window, history=history, probe=probe, writer=writer,
                            fail_dead_ratio=fail_dead_ratio, fail_total_dead_ratio=fail_total_dead_ratio,
                            **scan_options)
        self.on_alert = on_alert
        self.stop_on_alert = stop_on_alert
        self.watch: Watch | None = None
        self.reports: list[Report] = []
        self._breached = False
        self._trainer: Any = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        self.watch = Watch(pl_module, on_alert=self._alert, start_step=trainer.global_step, log_wandb=False,
                           root_hooks=False, **self.options)
        self.watch.start()
        self._log(trainer)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.watch is not None and self.watch.capture.attached:
            from ..backends.torch_live import batch_rows

            self.watch.capture.enter_pass(batch_rows(batch, {}))

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        if self.watch is not None:
            self.watch.capture.exit_pass()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.watch is None:
            return
        self.watch.capture.exit_pass()  # a step that skipped backward (loss None) still ends its pass
        while self.watch.steps < trainer.global_step:  # one call per optimizer step (accumulation aware)
            self.watch.step()
        self._log(trainer)
        if self._breached and self.stop_on_alert:
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.watch is not None:
            self.watch.close()
            self._log(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.watch is not None:
            self.watch.__exit__(type(exception), exception, None)

    def _log(self, trainer: Any) -> None:
        """Send the reports not yet logged to the trainer's loggers."""
        assert self.watch is not None
        for report in self.watch.reports[len(self.reports):]:
            self.reports.append(report)
            if trainer.is_global_zero:
                values = scalars(report)
                for logger in trainer.loggers:
                    logger.log_metrics(values, step=trainer.global_step)

    def _alert(self, report: Report) -> None:
        self._breached = True
        integration_alert(report, self.on_alert, self.stop_on_alert)
