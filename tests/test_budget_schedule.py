"""The budgeted schedule (``train.schedule_by=time``): warm-up and decay follow the elapsed
fraction of ``train.max_minutes``, the learning rate reaches 0 exactly at the budget, where
the run stops, and a resumed run continues from the training time in its checkpoint. Time is
a fake clock here (one tick per clock reading), so the tests are fast and deterministic."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import read_metric

from lanistr.checkpoint import read_weights
from lanistr.config import LanistrConfig, TrainConfig
from lanistr.errors import ConfigError
from lanistr.nn import LanistrForSequenceClassification
from lanistr.tasks.schedule import time_lr_factor
from lanistr.tasks.task import Task
from lanistr.tasks.trainer import Trainer


class FakeClock:
    """Each reading is ``step`` seconds after the previous one."""

    def __init__(self, start: float = 0.0, step: float = 1.0):
        self.t, self.step = start, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class ToyTask(Task):
    def __init__(self, n: int = 32, t: int = 7):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 99, (n, t), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def train_size(self):
        return len(self.ids)

    def collate(self, indices, epoch):
        return {"input_ids": self.ids[indices], "labels": self.labels[indices]}

    def counts(self, batch):
        return {"ce": float(len(batch["labels"]))}

    def loss_sums(self, model, batch):
        logits = model(batch["input_ids"]).logits
        return {"ce": F.cross_entropy(logits, batch["labels"], reduction="sum")}


def model():
    torch.manual_seed(0)
    return LanistrForSequenceClassification(
        LanistrConfig.from_any({"preset": "tiny", "labels": ["a", "b"], "dropout": 0.1}))


def train_config(**kw) -> TrainConfig:
    base = dict(batch_size=4, lr=1e-3, schedule_by="time", max_minutes=0.2, max_steps=0,
                warmup_ratio=0.25, eval_every=0, save_every=0, log_every=1, progress=False)
    return TrainConfig(**{**base, **kw})


def run(out, clock, resume=False, **kw):
    trainer = Trainer(model(), ToyTask(), train_config(**kw), out, clock=clock)
    if resume:
        assert trainer.resume()
    trainer.fit()
    return trainer


def test_the_learning_rate_reaches_zero_at_the_budget_and_the_run_stops_there(tmp_path):
    trainer = run(tmp_path, FakeClock())  # budget 12 s; one clock tick per step
    assert trainer.state.step == 12 and trainer.state.elapsed == 12.0
    assert trainer.stop_reason == "time budget reached (max_minutes=0.2)"
    lrs = read_metric(tmp_path, "lr")  # the rate the next step uses, after each step
    train = train_config()
    assert lrs == pytest.approx([1e-3 * time_lr_factor(train, k / 12) for k in range(1, 13)],
                                rel=1e-5)  # metrics.csv keeps 6 digits
    assert lrs[-1] == 0.0 and max(lrs) == pytest.approx(1e-3)
    peak = lrs.index(max(lrs))
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # warm-up: 25 % of the time
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then down to 0


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_every_decay_is_zero_at_the_budget(schedule):
    train = train_config(schedule=schedule)
    assert time_lr_factor(train, 1.0) == 0.0 and time_lr_factor(train, 3.0) == 0.0
    assert time_lr_factor(train, 0.25) == 1.0 and time_lr_factor(train, 0.125) == 0.5


def test_a_resumed_run_continues_its_budget_exactly(tmp_path):
    run(tmp_path / "straight", FakeClock())
    # stopped after 5 steps (5 s of the budget), resumed in a new process whose clock
    # reads something else entirely: the run continues from 5 s used, not from 0
    first = run(tmp_path / "split", FakeClock(), max_steps=5)
    assert first.state.step == 5 and first.state.elapsed == 5.0
    second = run(tmp_path / "split", FakeClock(start=1e6), resume=True)
    assert second.state.step == 12
    assert read_metric(tmp_path / "split", "lr") == read_metric(tmp_path / "straight", "lr")
    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    a = read_weights(tmp_path / "straight" / "checkpoints" / "step-0000012")
    b = read_weights(tmp_path / "split" / "checkpoints" / "step-0000012")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_another_budget_is_refused(tmp_path):
    run(tmp_path, FakeClock(), max_steps=3)
    trainer = Trainer(model(), ToyTask(), train_config(max_minutes=0.5), tmp_path,
                      clock=FakeClock())
    with pytest.raises(ConfigError, match="max_minutes=0.5 .checkpoint: 0.2.*budgeted"):
        trainer.resume()


def test_a_budgeted_schedule_is_validated():
    with pytest.raises(ConfigError, match="needs a time budget"):
        TrainConfig(schedule_by="time")
    with pytest.raises(ConfigError, match="warmup_ratio of the time budget"):
        TrainConfig(schedule_by="time", max_minutes=1, warmup_steps=10)
    assert dataclasses.replace(train_config(), schedule_by="steps").schedule_by == "steps"
