"""Linformer: keys and values projected along the sequence to ``k`` rows (Wang et al., 2020).

``K' = E[:T]^T K`` and ``V' = F[:T]^T V`` with learned ``E, F`` of shape ``(max_len, k)`` (one
pair per layer, shared by the heads; ``share_kv`` uses ``E`` for both). Each query attends to
the ``k`` projected rows, so time and memory are ``O(T * k)``. Padded key positions are zeroed
*before* the projection, so padding never leaks into ``K'``/``V'`` and adding padding does not
change the real tokens' outputs. ``E``/``F`` are fixed-length: a sequence longer than the
model's ``max_len`` is an error, and causal masking is impossible (every projected row mixes all
positions).

``E`` and ``F`` start as segment means: projected row ``j`` averages the keys of positions
``[j*max_len/k, (j+1)*max_len/k)``, a local pooling that is a sensible attention before any
training. For inputs much shorter than ``max_len`` the rows of empty segments are zero keys and
values that still take softmax mass (as in the original Linformer, trained at full length).
Switching a checkpoint trained with another backend to Linformer adds ``E``/``F``
(``...backend.E``, ``...backend.F``) as new parameters with this initialisation; the
checkpoint loader keeps them fresh and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import LinformerConfig
from lanistr.nn.attention.base import (
    AttentionBackend,
    Capabilities,
    SparseAttentionWeights,
    register_attention,
)


@dataclass
class LinformerWeights(SparseAttentionWeights):
    """Low-rank Linformer weights.

    - ``probs`` ``(B, H, Tq, k)``: each query's attention over the ``k`` projected rows (before
      dropout; rows sum to 1).
    - ``value_projection`` ``(B, Tk, k)``: ``F[:Tk]`` with padded key positions zeroed, so that
      ``V' = value_projection^T V``.

    ``densify()`` returns the matrix ``A = probs @ value_projection^T`` ``(B, H, Tq, Tk)``
    that mixes the values: ``out = A @ v``. Its rows sum to 1 only where the columns of ``F``
    do (at initialisation, for a full-length unpadded input); they are not probabilities.
    """

    probs: torch.Tensor
    value_projection: torch.Tensor

    form = "lowrank"

    def densify(self, max_tokens: int = 4096) -> torch.Tensor:
        self._check_size(max(self.probs.shape[2], self.value_projection.shape[1]), max_tokens)
        return torch.matmul(self.probs, self.value_projection.transpose(-1, -2)[:, None])

    def layer_view(self, index: int = 0, length: int | None = None):
        """The factors of example ``index``: a :class:`lanistr.viz.weights.LowRankAttention`."""
        from lanistr.viz.weights import LowRankAttention

        probs = self.probs[index].detach().float().cpu().numpy()  # (H, T, k)
        proj = self.value_projection[index].detach().float().cpu().numpy()  # (T, k)
        t = probs.shape[1] if length is None else length
        return LowRankAttention(probs[:, :t], proj[:t])


def segment_mean_projection(max_len: int, k: int) -> torch.Tensor:
    """(max_len, k): column ``j`` averages the positions of segment ``j`` of ``max_len``."""
    seg = torch.arange(max_len) * k // max_len  # segment of each position
    proj = F.one_hot(seg, k).float()
    return proj / proj.sum(0).clamp_min(1)


@register_attention("linformer")
class LinformerAttention(AttentionBackend):
    # E/F have max_len rows: the generic check refuses longer key sequences.
    capabilities = Capabilities(causal=False, cross_attention=True, returns_weights=True,
                                weights_form="lowrank", bounded_by_max_len=True,
                                complexity="O(T*k)")

    def __init__(self, config: LinformerConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.E = nn.Parameter(segment_mean_projection(self.max_len, config.k))
        self.F = None if config.share_kv else nn.Parameter(
            segment_mean_projection(self.max_len, config.k))

    def projections(self, tk: int, key_padding_mask: torch.Tensor | None, dtype):
        """(B or 1, Tk, k) key and value projections, zero at padded positions (``tk <=
        max_len``: checked by :meth:`AttentionBackend.forward`, ``bounded_by_max_len``)."""
        e = self.E[:tk].to(dtype)[None]  # (1, Tk, k)
        f = e if self.F is None else self.F[:tk].to(dtype)[None]
        if key_padding_mask is not None:
            keep = (~key_padding_mask)[..., None].to(dtype)  # (B, Tk, 1)
            e, f = e * keep, f * keep
        return e, f

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):
        e, f = self.projections(k.shape[2], key_padding_mask, k.dtype)
        kp = torch.matmul(e.transpose(1, 2)[:, None], k)  # (B, H, k, Dh)
        vp = torch.matmul(f.transpose(1, 2)[:, None], v)  # (B, H, k, Dh)
        if not need_weights:
            return F.scaled_dot_product_attention(q, kp, vp, dropout_p=self.dropout_p), None
        probs = torch.softmax(torch.matmul(q, kp.transpose(-1, -2)) / math.sqrt(q.shape[-1]), -1)
        out = torch.matmul(self.drop(probs), vp)  # (B, H, Tq, Dh)
        return out, LinformerWeights(probs.detach(), f.detach().expand(q.shape[0], -1, -1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_len={self.max_len}"
