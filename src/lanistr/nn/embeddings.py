"""Token embeddings (optionally x sqrt(d)) + sinusoidal or learned positions (+ segments)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.dropout import Dropout


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    inv = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table.float()


class Embeddings(nn.Module):
    def __init__(self, config: LanistrConfig):
        super().__init__()
        d = config.hidden_size
        self.token = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.scale = math.sqrt(d) if config.embed_scale else 1.0
        if config.position == "learned":
            self.position = nn.Embedding(config.max_len, d)
        else:
            self.position = None
            self.register_buffer("sinusoid", sinusoidal_table(config.max_len, d), persistent=False)
        self.segment = nn.Embedding(config.type_vocab_size, d) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps) if config.embed_layer_norm else None
        self.dropout = Dropout(config.dropout)
        self.max_len = config.max_len

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[-1]
        if position_ids is None:
            if t > self.max_len:
                from lanistr.errors import LanistrError

                raise LanistrError(f"input has {t} tokens but the model allows max_len="
                                   f"{self.max_len}; truncate it or use a long-document setup")
            position_ids = torch.arange(t, device=input_ids.device)
        x = self.token(input_ids)  # (B, T, D)
        if self.scale != 1.0:
            x = x * self.scale
        x = x + (self.position(position_ids) if self.position is not None
                 else self.sinusoid[position_ids])
        if self.segment is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.segment(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
