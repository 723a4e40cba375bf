"""The typed sections of a fine-tuning run config (``data``, ``finetune``) and its defaults.

Parsed and validated once where a command starts (:func:`lanistr.config.from_dict`); code
below the command boundary reads these dataclasses, never the raw dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lanistr.errors import ConfigError

META_FILE = "finetune.json"  # beside a fine-tuned model: its task and data fields


@dataclass
class FinetuneDataConfig:
    """Where the examples are and how to read them."""

    train: str | None = None
    eval: str | None = None  # held-out set for model selection / early stopping
    test: str | None = None  # evaluated once, with the final model
    eval_fraction: float = 0.0  # without `eval`: hold out this part of `train` (seeded)
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    max_len: int = 128
    tokenizer: str | None = None  # default: the tokenizer of `init`

    def __post_init__(self) -> None:
        if self.max_len < 4:
            raise ConfigError(f"data.max_len={self.max_len} must be >= 4")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")


@dataclass
class FinetuneOptions:
    """The ``finetune`` section."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the embeddings and the first N encoder layers
    layer_lr_decay: float = 1.0  # layer l (of L) trains at lr * decay ** (L + 1 - l)
    class_weights: Literal["none", "balanced"] = "none"
    patience: int = 0  # stop after this many evaluations without improvement (0 = never)
    metric: str | None = None  # model-selection metric; default per task

    def __post_init__(self) -> None:
        if self.freeze_layers < 0:
            raise ConfigError(f"finetune.freeze_layers={self.freeze_layers} must be >= 0")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"finetune.layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        if self.patience < 0:
            raise ConfigError(f"finetune.patience={self.patience} must be >= 0")


#: Fine-tuning defaults that differ from the loop's (used where the config does not say).
TRAIN_DEFAULTS = {"epochs": 3.0, "max_steps": 0, "batch_size": 16, "warmup_ratio": 0.1}
LR_PRETRAINED, LR_SCRATCH = 5e-5, 5e-4
