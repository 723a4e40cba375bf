"""Full (dense) softmax attention: PyTorch SDPA, or an explicit softmax when weights are asked for."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lanistr.nn.attention.base import AttentionBackend, Capabilities, register_attention


def allowed_mask(key_padding_mask: torch.Tensor | None, causal: bool, tq: int, tk: int,
                 device) -> torch.Tensor | None:
    """Bool mask broadcastable to (B, H, Tq, Tk), True where a query may attend a key.

    The causal mask is aligned bottom-right: query ``i`` sits at key position ``tk - tq + i``,
    which is what incremental decoding with a key/value cache needs.
    """
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
    if causal:
        qpos = torch.arange(tk - tq, tk, device=device)[:, None]
        kpos = torch.arange(tk, device=device)[None, :]
        causal_mask = kpos <= qpos  # (Tq, Tk)
        mask = causal_mask if mask is None else mask & causal_mask
    return mask


@register_attention("full")
class FullAttention(AttentionBackend):
    capabilities = Capabilities(causal=True, cross_attention=True, returns_weights=True,
                                weights_form="dense", complexity="O(T^2)")

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):
        tq, tk = q.shape[-2], k.shape[-2]
        p = self.dropout_p
        # CPU SDPA has no fused dropout: with dropout it runs this same explicit maths with
        # PyTorch's slow CPU mask, so on CPU the explicit path (cheap mask) is faster.
        if not need_weights and not (p and q.device.type == "cpu"):
            if key_padding_mask is None and causal and tq == tk:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
            mask = allowed_mask(key_padding_mask, causal, tq, tk, q.device)
            if mask is not None and torch.onnx.is_in_onnx_export():
                # The same softmax with an additive mask (exp(min - max) = 0 exactly): the
                # exporter turns a boolean mask into -inf plus a NaN clean-up pass over every
                # (B, H, Tq, Tk) score, a tenth of the exported graph's time.
                mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                    ~mask, torch.finfo(q.dtype).min)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        # Explicit path: same maths, and the probabilities are returned (before dropout).
        scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))  # (B, H, Tq, Tk)
        mask = allowed_mask(key_padding_mask, causal, tq, tk, q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(self.drop(weights), v)  # (B, H, Tq, Dh)
        return out, weights
