"""Learning-rate schedules of the training loop: by steps (:func:`lr_lambda`) or by the
elapsed fraction of a time budget (:func:`time_lr_factor`)."""

from __future__ import annotations

import math

from lanistr.config import TrainConfig


def lr_lambda(train: TrainConfig, total_steps: int):
    warmup = train.warmup_steps or int(train.warmup_ratio * total_steps)

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if train.schedule == "constant" or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if train.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return f


def time_lr_factor(train: TrainConfig, fraction: float) -> float:
    """The learning-rate factor of a budgeted schedule (``train.schedule_by=time``) at
    ``fraction`` of the time budget used: linear warm-up over ``train.warmup_ratio`` of the
    budget, then ``train.schedule`` decay to exactly 0 at the budget (cramming, Geiping &
    Goldstein 2022)."""
    f = min(max(fraction, 0.0), 1.0)
    warmup = train.warmup_ratio
    if warmup and f < warmup:
        return f / warmup
    if train.schedule == "constant":
        return 1.0 if f < 1.0 else 0.0
    progress = (f - warmup) / (1.0 - warmup)
    if train.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)
