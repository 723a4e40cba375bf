"""Typed model outputs: never a tuple whose meaning depends on flags."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T, D); zeros at padded positions
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer, (B, T, D)
    attentions: tuple | None = None  # per layer: (B, H, T, T) tensor or SparseAttentionWeights


@dataclass
class ModelOutput(EncoderOutput):
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None  # (B, D) sequence vector (pooler or first token)
    nsp_logits: torch.Tensor | None = None  # (B, 2) next-sentence logits (pretraining)
