"""Multi-head attention (projections around an attention backend), feed-forward, encoder layer.

Layers run on *flat real tokens*: a ``(N, D)`` tensor holding only the non-padding tokens of
the batch. Only the attention backend sees the padded ``(B, H, T, Dh)`` layout, so the
projections, the FFN and the LayerNorms never compute on padding. :class:`TokenLayout` does the
gather/scatter; with no padding its operations are free reshapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.attention import build_attention
from lanistr.nn.dropout import Dropout


@dataclass
class TokenLayout:
    """Where the N real tokens of a (B, T) batch live."""

    batch: int
    length: int
    index: torch.Tensor | None  # (N,) flat positions of real tokens; None = no padding
    key_padding_mask: torch.Tensor | None  # (B, T) True at padding; None = no padding
    pad_index: torch.Tensor | None = None  # (B*T - N,) flat positions of padding

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor | None, batch: int, length: int) -> TokenLayout:
        if attention_mask is None or bool(attention_mask.all()):
            return cls(batch, length, None, None)
        mask = attention_mask.bool()
        flat = mask.reshape(-1)
        index = flat.nonzero(as_tuple=True)[0]
        pad_index = (~flat).nonzero(as_tuple=True)[0]
        return cls(batch, length, index, ~mask, pad_index)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C)."""
        flat = x.reshape(self.batch * self.length, *x.shape[2:])
        return flat if self.index is None else flat.index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C), zeros at padding."""
        if self.index is not None and torch.onnx.is_in_onnx_export():
            x = self._pad_by_gather(x)
        elif self.index is not None:
            # One pass: zero the padding rows, scatter the real ones (in place, no clone).
            full = x.new_empty(self.batch * self.length, *x.shape[1:])
            if self.pad_index is None:
                full.zero_()
            else:
                full.index_fill_(0, self.pad_index, 0)
            x = full.index_copy_(0, self.index, x)
        return x.reshape(self.batch, self.length, *x.shape[1:])

    def _pad_by_gather(self, x: torch.Tensor) -> torch.Tensor:
        """The same padding as one gather of rows from ``[x; a zero row]``: what an ONNX
        export traces, since onnxruntime runs the scatter above element by element (it took a
        third of a MiniLM forward pass there)."""
        real = ~self.key_padding_mask.reshape(-1)  # (B*T,)
        rows = (real.long().cumsum(0) - 1).masked_fill(~real, x.shape[0])  # N = the zero row
        return torch.cat([x, x.new_zeros(1, *x.shape[1:])]).index_select(0, rows)  # (B*T, C)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    def __init__(self, config: LanistrConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.hidden_size)
        self.act = ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MultiHeadAttention(nn.Module):
    """Q/K/V projections, an attention backend, and the output projection.

    Self-attention uses one fused ``qkv`` projection. With ``cross=True`` the queries come
    from ``x`` and keys/values from ``context`` (``query`` and ``kv`` projections). For a
    ``shared_qk`` backend (keys derived from the queries) the key rows of ``qkv`` are not
    computed: the parameter keeps its shape, so a checkpoint switches backends freely, and
    its key rows get a zero gradient.
    """

    def __init__(self, config: LanistrConfig, layer_idx: int = 0, cross: bool = False):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.cross = cross
        if cross:
            self.query = nn.Linear(d, d)
            self.kv = nn.Linear(d, 2 * d)
        else:
            self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.backend = build_attention(config.attention, max_len=config.max_len,
                                       dropout=config.attention_dropout, layer_idx=layer_idx)
        self.shared_qk = self.backend.capabilities.shared_qk

    def split_heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(B, T, parts*D) -> parts x (B, H, T, Dh)."""
        b, t, _ = x.shape
        x = x.view(b, t, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return tuple(x.unbind(0))

    def attend(self, q, k, v, *, key_padding_mask=None, causal=False, need_weights=False,
               cross=False):
        """(B, H, Tq, Dh) x3 -> ((B, Tq, D), weights); ``cross=True`` for cross-attention."""
        out, weights = self.backend(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                                    need_weights=need_weights, cross=cross)
        b, _, tq, _ = out.shape
        return out.transpose(1, 2).reshape(b, tq, -1), weights  # (B, Tq, D)

    def project(self, x: torch.Tensor, layout: TokenLayout):
        """Flat tokens (N, D) -> q, k, v (B, H, T, Dh); k is None for a shared-QK backend,
        whose key projection is skipped (the q and v row blocks of ``qkv`` only)."""
        if not self.shared_qk:
            return self.split_heads(layout.pad(self.qkv(x)), 3)
        d = self.num_heads * self.head_dim
        w, b = self.qkv.weight, self.qkv.bias
        (q,) = self.split_heads(layout.pad(F.linear(x, w[:d], b[:d])), 1)
        (v,) = self.split_heads(layout.pad(F.linear(x, w[2 * d:], b[2 * d:])), 1)
        return q, None, v

    def forward(self, x: torch.Tensor, layout: TokenLayout, *, causal: bool = False,
                need_weights: bool = False):
        """Self-attention on flat tokens: (N, D) -> (N, D)."""
        q, k, v = self.project(x, layout)  # (B, H, T, Dh) each (k None: shared QK)
        out, weights = self.attend(q, k, v, key_padding_mask=layout.key_padding_mask,
                                   causal=causal, need_weights=need_weights)
        return self.out(layout.unpad(out)), weights


class EncoderLayer(nn.Module):
    """Attention + FFN, each wrapped in dropout, residual and LayerNorm (post- or pre-norm)."""

    def __init__(self, config: LanistrConfig, layer_idx: int = 0):
        super().__init__()
        self.attention = MultiHeadAttention(config, layer_idx)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)
        self.pre_norm = config.norm == "pre"

    def forward(self, x: torch.Tensor, layout: TokenLayout, *, causal: bool = False,
                need_weights: bool = False):
        if self.pre_norm:
            h, weights = self.attention(self.attention_norm(x), layout, causal=causal,
                                        need_weights=need_weights)
            x = x + self.dropout(h)
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        else:
            h, weights = self.attention(x, layout, causal=causal, need_weights=need_weights)
            x = self.attention_norm(x + self.dropout(h))
            x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return x, weights
