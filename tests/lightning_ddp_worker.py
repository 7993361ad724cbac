"""Run by test_lightning_ddp.py: Lightning's own DDP on two CPU processes (its launcher starts
rank 1 by running this script again) with DeadReLUMonitor. Each rank also counts its ReLU's
fires with a plain forward hook, per step, and rank 0 alone scans a batch afterwards (a
scan inside a training framework's process group must not wait for the other rank). Each
rank writes what it saw to OUT/rank<r>.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn

import relu_doctor as rd
from relu_doctor.integrations.lightning import DeadReLUMonitor

DEAD = [0, 3]
STEPS, BATCH, EVERY, WINDOW = 8, 8, 4, 2


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
        with torch.no_grad():  # dead on every input
            self.net[0].weight[DEAD] = 0
            self.net[0].bias[DEAD] = -1
        self.fires_by_step: dict[int, list[int]] = {}
        self.net[1].register_forward_hook(self._count)

    def _count(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        step = self.trainer.global_step if self._trainer is not None else -1
        fires = (out > 0).sum(0).tolist()
        seen = self.fires_by_step.setdefault(step, [0] * len(fires))
        self.fires_by_step[step] = [a + b for a, b in zip(seen, fires)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * STEPS * BATCH, 4, generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=BATCH)
    monitor = DeadReLUMonitor(every=EVERY, window=WINDOW)
    module = Regressor()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, default_root_dir=str(out),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[monitor])
    trainer.fit(module, loader)
    rank = trainer.global_rank
    fires = {str(k): v for k, v in module.fires_by_step.items()}
    alone = None
    if rank == 0:  # one rank alone: a plain scan of its own, not a collective one
        alone = rd.scan(module.net, data=x[:16].numpy(), batch_size=8).to_dict()["sample"]["samples"]
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "reports": [r.to_dict() for r in monitor.reports], "fires_by_step": fires,
        "alone_samples": alone}))
    dist.barrier()  # both files are written before either process leaves


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # torch 2.13's gloo aborts now and then while the interpreter finalizes (see
    # ddp_watch_worker.py); what the test reads is written by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
