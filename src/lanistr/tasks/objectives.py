"""The fine-tuning objectives on the shared loop: classification and tagging as
:class:`~lanistr.tasks.task.Task` s (batches, cross-entropy sums, metrics).

Losses follow the loop's contract: a sum over the batch, divided by a global count. With
``class_weights: balanced`` the sum is weighted and the count is the sum of the batch's
weights, so the normalisation stays exact over micro-batches and ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import TrainConfig
from lanistr.data.tokenizer import Tokenizer
from lanistr.errors import ConfigError
from lanistr.io import write_json
from lanistr.metrics import entity_counts, entity_scores, is_bio, scores_from_confusion
from lanistr.tasks.labelled import (
    IGNORE,
    Encoded,
    balanced_weights,
    length_batches,
    pad_batch,
    pad_targets,
)
from lanistr.tasks.param_groups import layer_decay_groups
from lanistr.tasks.run_config import META_FILE, FinetuneOptions
from lanistr.tasks.task import Task, default_param_groups


class FinetuneTask(Task):
    """Shared by the fine-tuning tasks: pre-tokenised data, length-sorted evaluation,
    optional class weights, layer-wise learning-rate decay, tokenizer + metadata saving."""

    kind = ""
    metrics: tuple[str, ...] = ()
    #: file -> (examples truncated to max_len, examples), filled in by the task builder
    truncation: dict[str, tuple[int, int]]

    def __init__(self, train: Encoded, eval: Encoded | None, labels: list[str],
                 tokenizer: Tokenizer, options: FinetuneOptions, meta: dict,
                 eval_batch_size: int = 32):
        self.train_data, self.eval_data = train, eval
        self.labels, self.tokenizer, self.options, self.meta = labels, tokenizer, options, meta
        self.eval_batch_size = eval_batch_size
        self.truncation = {}
        # states after the frozen lower layers (lanistr.tasks.frozen_cache.attach), or None
        self.train_cache = self.eval_cache = None
        self.class_weight = (torch.tensor(balanced_weights(self.label_counts()), dtype=torch.float32)
                             if options.class_weights == "balanced" else None)
        metric = options.metric or self.default_metric()
        if metric not in self.available_metrics():
            raise ConfigError(f"finetune.metric={metric!r} is not computed for task "
                              f"{self.kind!r} (choose from {', '.join(self.available_metrics())})")
        self.best_metric = metric if eval is not None else None
        self.greater_is_better = metric != "loss"
        self.patience = options.patience

    def default_metric(self) -> str:
        raise NotImplementedError

    def available_metrics(self) -> tuple[str, ...]:
        return self.metrics

    def label_counts(self) -> np.ndarray:
        raise NotImplementedError

    def train_size(self) -> int:
        return len(self.train_data)

    def example_lengths(self):
        return [int(np.size(x)) for x in self.train_data.ids]

    def eval_batches(self, rank, world_size):
        if self.eval_data is None:
            return
        for idx in length_batches(self.eval_data.ids, self.eval_batch_size, rank=rank,
                                  world_size=world_size):
            yield self._with_cache(self.make_batch(self.eval_data, idx), self.eval_cache, idx)

    def collate(self, indices, epoch):
        return self._with_cache(self.make_batch(self.train_data, indices), self.train_cache,
                                indices)

    @staticmethod
    def _with_cache(batch, cache, indices):
        if cache is not None:
            batch["frozen_hidden"] = cache.rows(indices)  # (N, D)
        return batch

    def _logits(self, model, batch):
        if "frozen_hidden" in batch:  # the layers above the cached frozen ones
            return model.logits_from_layer(batch["frozen_hidden"], batch["attention_mask"],
                                           self.train_cache.num_layers)
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits

    def make_batch(self, data: Encoded, indices: list[int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _weighted_count(self, targets: torch.Tensor) -> float:
        kept = targets[targets != IGNORE]
        if self.class_weight is None:
            return float(kept.numel())
        return float(self.class_weight.to(kept.device)[kept].double().sum())

    def counts(self, batch):
        return {"loss": self._weighted_count(batch["labels"])}

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, weighted: bool = True):
        weight = self.class_weight.to(logits.device) if (
            weighted and self.class_weight is not None) else None
        return F.cross_entropy(logits.float(), targets, weight=weight, reduction="sum",
                               ignore_index=IGNORE)

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict]:
        decay = self.options.layer_lr_decay
        if decay == 1.0:
            return default_param_groups(model, train.weight_decay)
        return layer_decay_groups(model, train.lr, train.weight_decay, decay)

    def save_extra(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)
        write_json(Path(directory) / META_FILE, self.meta)


class ClassificationTask(FinetuneTask):
    kind = "classify"
    metrics = ("accuracy", "macro_f1", "loss")

    def default_metric(self) -> str:
        return "macro_f1"

    def label_counts(self):
        return np.bincount(self.train_data.targets, minlength=len(self.labels))

    def make_batch(self, data, indices):
        batch = pad_batch([data.ids[i] for i in indices], self.tokenizer.pad_id,
                          None if data.types is None else [data.types[i] for i in indices])
        batch["labels"] = torch.from_numpy(data.targets[indices])
        return batch

    def loss_sums(self, model, batch):
        return {"loss": self._loss(self._logits(model, batch), batch["labels"])}

    def eval_sums(self, model, batch):
        logits = self._logits(model, batch).float()
        y = batch["labels"]
        k = len(self.labels)
        cm = torch.bincount(y * k + logits.argmax(-1), minlength=k * k).reshape(k, k)
        return {"confusion": cm.double(), "loss_sum": self._loss(logits, y, weighted=False),
                "count": torch.tensor(float(y.numel()))}

    def finalize_metrics(self, sums):
        scores = scores_from_confusion(sums["confusion"].numpy(), self.labels)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                "loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}


class TaggingTask(FinetuneTask):
    kind = "tag"
    metrics = ("token_accuracy", "loss")

    def __init__(self, train: Encoded, eval: Encoded | None, labels: list[str], *args, **kwargs):
        self.bio = is_bio(labels)
        super().__init__(train, eval, labels, *args, **kwargs)
        self.entity_types = sorted({t[2:] for t in self.labels if t != "O"}) if self.bio else []

    def available_metrics(self):
        return self.metrics + (("entity_f1",) if self.bio else ())

    def default_metric(self) -> str:
        return "entity_f1" if self.bio else "token_accuracy"

    def label_counts(self):
        flat = np.concatenate(self.train_data.targets)
        return np.bincount(flat[flat != IGNORE], minlength=len(self.labels))

    def make_batch(self, data, indices):
        batch = pad_batch([data.ids[i] for i in indices], self.tokenizer.pad_id)
        batch["labels"] = pad_targets([data.targets[i] for i in indices],
                                       batch["input_ids"].shape[1])
        return batch

    def loss_sums(self, model, batch):
        logits = self._logits(model, batch)  # (B, T, K)
        return {"loss": self._loss(logits.flatten(0, 1), batch["labels"].flatten())}

    def eval_sums(self, model, batch):
        logits = self._logits(model, batch).float()
        y = batch["labels"]
        keep = y != IGNORE
        pred = logits.argmax(-1)
        k = len(self.labels)
        cm = torch.bincount(y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        sums = {"confusion": cm.double(),
                "loss_sum": self._loss(logits.flatten(0, 1), y.flatten(), weighted=False),
                "count": keep.sum().double()}
        if self.bio:
            gold = [[self.labels[i] for i in y[b][keep[b]].tolist()] for b in range(len(y))]
            guess = [[self.labels[i] for i in pred[b][keep[b]].tolist()] for b in range(len(y))]
            counts = entity_counts(gold, guess)
            sums["entities"] = torch.tensor(
                np.stack([counts.get(t, np.zeros(3, np.int64)) for t in self.entity_types]),
                dtype=torch.float64)
        return sums

    def finalize_metrics(self, sums):
        scores = scores_from_confusion(sums["confusion"].numpy(), self.labels)
        out = {"token_accuracy": scores["accuracy"],
               "loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}
        if "entities" in sums:
            rows = sums["entities"].numpy().astype(np.int64)
            out["entity_f1"] = entity_scores(dict(zip(self.entity_types, rows)))["entity_f1"]
        return out
