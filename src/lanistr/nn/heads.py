"""Task heads. They return logits only; losses live in ``lanistr.tasks``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.layers import ACTIVATIONS


class Pooler(nn.Module):
    """BERT pooler: dense + tanh on the first token."""

    def __init__(self, config: LanistrConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_token))


class MLMHead(nn.Module):
    """dense + activation + LayerNorm, then a decoder tied to the token embeddings, + bias."""

    def __init__(self, config: LanistrConfig, embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.activation]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.embedding = [embedding]  # a list: tied, not registered twice in the state dict

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V)."""
        h = self.norm(self.act(self.dense(hidden)))
        return F.linear(h, self.embedding[0].weight, self.bias)


class ClassificationHead(nn.Module):
    def __init__(self, config: LanistrConfig, num_labels: int):
        super().__init__()
        p = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(config.hidden_size, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(x))
