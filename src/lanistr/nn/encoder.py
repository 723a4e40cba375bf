"""The encoder stack: embeddings -> N encoder layers (-> final LayerNorm for pre-norm)."""

from __future__ import annotations

import torch
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.embeddings import Embeddings
from lanistr.nn.layers import EncoderLayer, TokenLayout
from lanistr.nn.outputs import EncoderOutput


class Encoder(nn.Module):
    def __init__(self, config: LanistrConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_layers))
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.norm == "pre" else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False, causal: bool = False) -> EncoderOutput:
        b, t = input_ids.shape
        layout = TokenLayout.from_mask(attention_mask, b, t)
        x = layout.unpad(self.embeddings(input_ids, token_type_ids))  # (N, D) real tokens only
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, layout, causal=causal, need_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
            if hidden is not None:
                hidden[-1] = x
        return EncoderOutput(
            last_hidden_state=layout.pad(x),
            hidden_states=tuple(layout.pad(h) for h in hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )

    # A split forward for frozen lower layers whose outputs are computed once and cached
    # (lanistr.tasks.frozen_cache): upper(*lower(ids, mask, types, k), k) == forward(...).

    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              token_type_ids: torch.Tensor | None, num_layers: int):
        """The real tokens after the embeddings and the first ``num_layers`` layers:
        ``((N, D), layout)``."""
        b, t = input_ids.shape
        layout = TokenLayout.from_mask(attention_mask, b, t)
        x = layout.unpad(self.embeddings(input_ids, token_type_ids))  # (N, D)
        for layer in self.layers[:num_layers]:
            x, _ = layer(x, layout)
        return x, layout

    def attention_inputs(self, x: torch.Tensor, layout: TokenLayout, index: int):
        """The queries, keys and values ``(B, H, T, Dh)`` that layer ``index`` computes from
        the real-token states ``x`` ``(N, D)`` entering it (``lower(..., index)``): what
        attention-relation distillation (MiniLM) matches. A shared-QK backend's keys are its
        queries."""
        layer = self.layers[index]
        if layer.pre_norm:
            x = layer.attention_norm(x)
        q, k, v = layer.attention.project(x, layout)
        return q, (q if k is None else k), v

    def upper(self, x: torch.Tensor, layout: TokenLayout, start: int) -> torch.Tensor:
        """Layers ``start``.. (+ the final norm) on real-token states ``(N, D)``;
        returns the padded last hidden state ``(B, T, D)``."""
        for layer in self.layers[start:]:
            x, _ = layer(x, layout)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return layout.pad(x)
