"""Where a watch's reports go: a JSON-lines history, TensorBoard, Weights & Biases, logging, alerts.

Sinks take a finished Report and never compute a metric: the numbers are the report's.
Every sink writes at the report's step (the last step of its window, or the probe's step).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..report import Report

log = logging.getLogger("relu_doctor.watch")

PREFIX = "relu_doctor"


class DeadReLUAlert(RuntimeError):
    """A watch threshold was breached and the watch was asked to raise (on_alert="raise")."""

    def __init__(self, report: Report) -> None:
        super().__init__(alert_text(report))
        self.report = report


def report_step(report: Report) -> int:
    """The step a report is logged at: the last step its sample covers."""
    steps = report.sample.get("steps") or [0, 0]
    return int(steps[-1])


def scalars(report: Report) -> dict[str, float]:
    """The numbers a dashboard plots: the model's summary, then each site's dead ratio."""
    s = report.summary
    out = {
        f"{PREFIX}/dead_ratio": float(s.dead_ratio),
        f"{PREFIX}/dead": float(s.dead),
        f"{PREFIX}/dormant": float(s.dormant),
        f"{PREFIX}/sparsity": float(s.sparsity),
    }
    for site in report.sites:
        out[f"{PREFIX}/dead_ratio/{site.name}"] = float(site.dead_ratio)
    return out


def alert_text(report: Report) -> str:
    steps = report.sample.get("steps") or ["?", "?"]
    where = "; ".join(v.describe() for v in report.gates.violations)
    return f"relu-doctor: dead ReLUs at steps {steps[0]}-{steps[-1]}: {where}"


def integration_alert(report: Report, on_alert: Any, stop_on_alert: bool) -> None:
    """A framework callback's alert: the user's on_alert, else a warning (none when training is
    stopped for it instead)."""
    if callable(on_alert):
        on_alert(report)
    elif not stop_on_alert:
        warnings.warn(alert_text(report), RuntimeWarning, stacklevel=3)  # at the callback's caller


class HistoryFile:
    """One report per line, appended and flushed as each window ends (a crash loses nothing written)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            from ..errors import UserError

            raise UserError(f"history {self.path} is a folder", "Pass a file path, e.g. relu.jsonl.")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, report: Report) -> None:
        line = json.dumps(report.to_dict(), allow_nan=False, separators=(",", ":"))
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class Sinks:
    """Fan a report out to every configured sink; only the writer rank writes, every rank alerts."""

    def __init__(self, history: str | Path | None, writer: Any, on_alert: Callable[[Report], Any] | str | None,
                 is_writer: bool = True, log_wandb: bool = True) -> None:
        if isinstance(on_alert, str) and on_alert not in ("warn", "raise"):
            from ..errors import UserError

            raise UserError(f"on_alert must be a callable, 'warn' or 'raise' (got {on_alert!r})")
        self.history = HistoryFile(history) if history is not None and is_writer else None
        self.writer = writer if is_writer else None
        self.on_alert = on_alert
        self.is_writer = is_writer
        self.log_wandb = log_wandb  # off where a framework's own logger already feeds W&B

    def emit(self, report: Report) -> None:
        if self.is_writer:
            if self.history is not None:
                self.history.write(report)
            values = scalars(report)
            step = report_step(report)
            if self.writer is not None:
                for tag, value in values.items():
                    self.writer.add_scalar(tag, value, step)
                self.writer.flush()
            if self.log_wandb:
                _log_wandb(values)
            _log_text(report)
        if not report.gates.passed:
            self._alert(report)

    def _alert(self, report: Report) -> None:
        if callable(self.on_alert):
            self.on_alert(report)
        elif self.on_alert == "raise":
            raise DeadReLUAlert(report)
        else:
            warnings.warn(alert_text(report), RuntimeWarning, stacklevel=4)


def _log_wandb(values: dict[str, float]) -> None:
    """Log to the active W&B run, if the program uses wandb (never imported here)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is not None:
        run.log(values, commit=False)  # joins the user's own step, whatever they count


def _log_text(report: Report) -> None:
    s = report.summary
    steps = report.sample.get("steps") or ["?", "?"]
    worst = ", ".join(f"{site.name} {site.dead_ratio:.0%}" for site in report.worst_sites()[:3])
    log.info("steps %s-%s: %d of %d grad-blocked neurons dead (%.1f%%)%s", steps[0], steps[-1], s.dead,
             s.grad_blocked_neurons, 100 * s.dead_ratio, f"; worst: {worst}" if worst else "")
