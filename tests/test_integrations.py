"""The Lightning and transformers callbacks, run inside the real Trainers (tiny models, nothing downloaded)."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow

DEAD = [2, 5]


def _planted_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():  # dead on every input, and SGD without decay keeps them so (zero gradient)
        net[0].weight[DEAD] = 0
        net[0].bias[DEAD] = -1
    return net


def _lightning_module():
    import lightning.pytorch as pl

    class Regressor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _planted_net()

        def forward(self, x):  # for probes; training_step does not use it
            return self.net(x)

        def training_step(self, batch, batch_idx):  # calls the submodule, not self(x)
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return Regressor()


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=8)


def _trainer(tmp_path, callback, max_steps=12):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path)),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, callbacks=[callback])


def test_lightning_monitor_measures_windows_and_logs_scalars(tmp_path) -> None:
    from relu_doctor.integrations.lightning import DeadReLUMonitor

    monitor = DeadReLUMonitor(every=4, window=2, history=tmp_path / "relu.jsonl")
    trainer = _trainer(tmp_path, monitor)
    trainer.fit(_lightning_module(), _loader())
    assert [r.sample["steps"] for r in monitor.reports] == [[0, 1], [4, 5], [8, 9]]
    for r in monitor.reports:
        assert r.sample["samples"] == 16 and r.sample["forward_passes"] == 2
        assert r.site("net.1").dead_indices == DEAD
    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    logged = [(int(r["step"]), float(r["relu_doctor/dead_ratio/net.1"])) for r in rows
              if r.get("relu_doctor/dead_ratio/net.1")]
    assert logged == [(2, 0.25), (6, 0.25), (10, 0.25)]
    assert len((tmp_path / "relu.jsonl").read_text().splitlines()) == 3


def test_lightning_monitor_stops_training_on_a_breached_threshold(tmp_path) -> None:
    from relu_doctor.integrations.lightning import DeadReLUMonitor

    monitor = DeadReLUMonitor(every=4, window=2, fail_dead_ratio=0.2, stop_on_alert=True)
    trainer = _trainer(tmp_path, monitor, max_steps=40)
    trainer.fit(_lightning_module(), _loader())
    assert trainer.global_step == 2 and len(monitor.reports) == 1
    assert not monitor.reports[0].gates.passed


def test_lightning_monitor_in_probe_mode(tmp_path) -> None:
    from relu_doctor.integrations.lightning import DeadReLUMonitor

    probe = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    monitor = DeadReLUMonitor(every=4, probe=probe)
    trainer = _trainer(tmp_path, monitor)
    trainer.fit(_lightning_module(), _loader())
    assert [r.sample["steps"] for r in monitor.reports] == [[0, 0], [4, 4], [8, 8], [12, 12]]
    assert all(r.sample["source"] == "probe" and r.site("net.1").dead_indices == DEAD for r in monitor.reports)


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=16, hidden_act="relu", num_labels=2)
    return BertForSequenceClassification(config)


def _token_data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (n, 8), generator=g)
    return [{"input_ids": ids[i], "labels": int(ids[i, 0] % 2)} for i in range(n)]


def _hf_trainer(tmp_path, callback, max_steps=10, callbacks=None, **arguments):
    """The tiny BERT's Trainer; `arguments` override the TrainingArguments below, `callbacks`
    replaces [callback]."""
    from transformers import Trainer, TrainingArguments

    defaults = dict(output_dir=str(tmp_path), report_to="none", max_steps=max_steps, per_device_train_batch_size=4,
                    logging_steps=100, save_strategy="no", use_cpu=True, disable_tqdm=True,
                    remove_unused_columns=False, seed=0)
    args = TrainingArguments(**{**defaults, **arguments})
    return Trainer(model=_tiny_bert(), args=args, train_dataset=_token_data(),
                   callbacks=[callback] if callbacks is None else callbacks)


ACT = "bert.encoder.layer.0.intermediate.intermediate_act_fn"


def test_transformers_callback_logs_through_the_trainer(tmp_path) -> None:
    from relu_doctor.integrations.transformers import DeadReLUCallback

    callback = DeadReLUCallback(every=4, window=2)
    trainer = _hf_trainer(tmp_path, callback)
    trainer.train()
    assert [r.sample["steps"] for r in callback.reports] == [[0, 1], [4, 5], [8, 9]]
    report = callback.reports[0]
    assert [s.name for s in report.sites] == [ACT]
    assert report.sites[0].neurons == 24 and report.sample["samples"] == 8
    logged = [(e["step"], e[f"relu_doctor/dead_ratio/{ACT}"]) for e in trainer.state.log_history
              if f"relu_doctor/dead_ratio/{ACT}" in e]
    assert [step for step, _ in logged] == [2, 6, 10]
    assert [v for _, v in logged] == [r.sites[0].dead_ratio for r in callback.reports]


@pytest.mark.parametrize("attached", [True, False])
def test_transformers_callback_reaches_report_to_tensorboard_when_attached(tmp_path, monkeypatch,
                                                                          attached: bool) -> None:
    """report_to loggers come before the callbacks given to the Trainer: only an attached
    callback's scalars reach TensorBoard's event file (read back with TensorBoard's reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from relu_doctor.integrations.transformers import DeadReLUCallback

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = DeadReLUCallback(every=4, window=2)
    trainer = _hf_trainer(tmp_path, callback, callbacks=[] if attached else None, report_to="tensorboard")
    if attached:
        assert callback.attach(trainer) is callback
        assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()
    # the event files under output_dir (TENSORBOARD_LOGGING_DIR unset: output_dir/runs/...)
    events = [EventAccumulator(str(p)).Reload() for p in tmp_path.rglob("events.out.tfevents.*")]
    tag = f"train/relu_doctor/dead_ratio/{ACT}"
    found = [[(e.step, e.value) for e in acc.Scalars(tag)] for acc in events if tag in acc.Tags()["scalars"]]
    if not attached:
        assert found == []
        return
    (steps_values,) = found
    assert [step for step, _ in steps_values] == [2, 6, 10]
    assert [v for _, v in steps_values] == pytest.approx([r.sites[0].dead_ratio for r in callback.reports])


def test_transformers_callback_stops_training(tmp_path) -> None:
    from relu_doctor.integrations.transformers import DeadReLUCallback

    callback = DeadReLUCallback(every=4, window=2, fail_total_dead_ratio=0.0, stop_on_alert=True,
                                tau=0.5)  # any dead neuron breaches a 0 threshold
    trainer = _hf_trainer(tmp_path, callback, max_steps=30)
    model = trainer.model
    with torch.no_grad():  # plant one dead intermediate neuron
        dense = model.bert.encoder.layer[0].intermediate.dense
        dense.weight[3] = 0
        dense.bias[3] = -10
    trainer.train()
    assert trainer.state.global_step == 2
    assert callback.reports[0].sites[0].dead_indices == [3]


@pytest.mark.parametrize("framework", ["lightning", "transformers"])
def test_a_compiled_model_gives_the_plain_models_windows(tmp_path, framework: str) -> None:
    """Both Trainers' own torch.compile route (dynamo's eager backend: no C++ build here)."""

    def windows(compiled: bool) -> list:
        if framework == "lightning":

            from relu_doctor.integrations.lightning import DeadReLUMonitor

            monitor = DeadReLUMonitor(every=4, window=2)
            module = _lightning_module()
            trainer = _trainer(tmp_path / str(compiled), monitor, max_steps=8)
            trainer.fit(torch.compile(module, backend="eager") if compiled else module, _loader())
            reports = monitor.reports
        else:
            from relu_doctor.integrations.transformers import DeadReLUCallback

            callback = DeadReLUCallback(every=4, window=2)
            extra = dict(torch_compile=True, torch_compile_backend="eager") if compiled else {}
            _hf_trainer(tmp_path / str(compiled), callback, max_steps=6, **extra).train()
            reports = callback.reports
        return [(r.sample["steps"], [(s.name, s.counters.fires.tolist()) for s in r.sites]) for r in reports]

    plain = windows(False)
    assert len(plain) == 2 and plain == windows(True)

