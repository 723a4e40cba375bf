"""What a task gives the one training loop (:class:`Task`): batches, loss sums and their
global counts, evaluation, and its parameter groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from lanistr.config import TrainConfig

Batch = dict[str, torch.Tensor]


class Task:
    """What the training loop needs from a task. Subclasses override the methods below."""

    #: eval metric used for early stopping / best checkpoint (None = keep the last)
    best_metric: str | None = None
    greater_is_better: bool = True

    def train_size(self) -> int:
        raise NotImplementedError

    def example_lengths(self) -> Sequence[int] | None:
        """Each training example's token count, for batches grouped by length
        (``train.group_by_length``); None where all are alike (packed sequences)."""
        return None

    def collate(self, indices: list[int], epoch: int) -> Batch:
        """The training micro-batch made of these example indices."""
        raise NotImplementedError

    def counts(self, batch: Batch) -> dict[str, float]:
        """Normalisers of each loss term (e.g. masked tokens), known before the forward."""
        raise NotImplementedError

    def loss_sums(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Summed (not averaged) loss of each term; the loop divides by global counts."""
        raise NotImplementedError

    def eval_batches(self, rank: int, world_size: int) -> Iterable[Batch]:
        """This rank's shard of the evaluation data (empty = no evaluation)."""
        return ()

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Summed statistics of one evaluation batch; reduced over batches and ranks."""
        return {}

    def finalize_metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in sums.items()}

    def num_tokens(self, batch: Batch) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())

    def on_step(self, step: int, total_steps: int) -> None:
        """Called on every rank before optimizer step ``step`` (0-based) of ``total_steps``,
        also right after a resume: for schedules that follow training progress (the
        gradient-reversal weight of DANN, gradual unfreezing). Keep it a pure function of
        ``step`` so that a resumed run does exactly what an uninterrupted one does."""

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict]:
        """Optimizer parameter groups: no weight decay on biases and LayerNorms."""
        return default_param_groups(model, train.weight_decay)

    def save_extra(self, directory: Path) -> None:
        """Write task files (tokenizer, label set) into a checkpoint directory."""


def default_param_groups(model: nn.Module, weight_decay: float, lr_scale: dict | None = None):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
