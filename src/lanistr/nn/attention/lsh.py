"""LSH attention with shared query/key vectors (Reformer, Kitaev et al., 2020).

Keys are the queries normalised to unit length (the ``k`` the layer passes in is not used; the
backend declares ``Capabilities.shared_qk``, and the layer does not compute the key
projection). Each of ``n_hashes`` rounds hashes the queries with
a random rotation (angular LSH: ``bucket = argmax([xR; -xR])``), sorts the tokens by
``(bucket, position)``, cuts the sorted order into chunks of ``bucket_size`` and lets every
query attend to the keys of its own chunk and of the previous chunk (the first chunk has no
previous one). The rounds are combined with their log-sum-exp weights:
``out = sum_r exp(lse_r - logsumexp_r lse_r) * out_r``. Cost ``O(T * n_hashes * bucket_size)``.

Details that make the backend exact in its degenerate case and padding-proof:

- Number of buckets: a sequence with ``n`` real tokens uses ``2 * ceil(n / (2*bucket_size))``
  buckets (about one chunk per bucket), and a single bucket when ``n <= bucket_size``; so with
  ``bucket_size >= T`` the backend is full attention over the shared-QK keys.
- Padding: padded tokens are sorted after every real token and are never keys; the bucket
  count depends on the real length only, so padding does not change the real tokens' output.
- Self rule: a token attends to itself only when it has no other candidate in *any* round.
  Its own score is replaced by a huge negative finite number, so it gets weight exactly 0 next
  to any other candidate and weight 1 when it is alone (and such a round then weighs 0 next to a
  round with other candidates).
- No causal mode: even with future keys masked, which past keys share a token's chunk depends
  on the buckets of future tokens, so the future would leak into the output.
- Rotations are drawn from ``seed`` and the layer index (each layer hashes differently), in
  blocks of columns, so they do not depend on the sequence length or the batch: the hashing is
  deterministic. Duplicates across rounds are not corrected for: a key found in ``m`` rounds
  counts ``m`` times in the combined weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lanistr.config import LSHConfig
from lanistr.nn.attention.base import (
    AttentionBackend,
    Capabilities,
    SparseAttentionWeights,
    register_attention,
)

_ROTATION_BLOCK = 64  # rotation columns drawn per seeded generator
_HASH_ROWS = 4096  # tokens hashed at a time (bounds the rotated-projection memory)


@dataclass
class LSHWeights(SparseAttentionWeights):
    """LSH weights, per hashing round ``r`` (probabilities before dropout).

    - ``buckets`` ``(B, H, R, T)``: each token's bucket (-1 at padding).
    - ``order`` ``(B, H, R, Tp)``: the positions in sorted order (``Tp`` = T rounded up to a
      multiple of ``bucket_size``; positions ``>= T`` are internal padding).
    - ``chunk_probs`` ``(B, H, R, C, bucket_size, 2*bucket_size)``: query ``i`` of chunk ``c``
      over the keys of chunk ``c - 1`` then of chunk ``c`` (sorted order).
    - ``round_weights`` ``(B, H, R, T)``: the weight of round ``r`` in each token's output.

    ``densify()`` sums ``round_weights * chunk_probs`` scattered to ``(B, H, T, T)``.
    """

    buckets: torch.Tensor
    order: torch.Tensor
    chunk_probs: torch.Tensor
    round_weights: torch.Tensor

    form = "buckets"

    def densify(self, max_tokens: int = 4096) -> torch.Tensor:
        b, h, r, t = self.buckets.shape
        self._check_size(t, max_tokens)
        tp = self.order.shape[-1]
        chunk = self.chunk_probs.shape[-2]
        qpos = self.order.view(b, h, r, -1, chunk)  # (B, H, R, C, bs)
        kpos = torch.cat([qpos.roll(1, 3), qpos], -1)  # (B, H, R, C, 2bs)
        rw = F.pad(self.round_weights, (0, tp - t)).gather(3, self.order)  # sorted order
        contrib = self.chunk_probs * rw.view(b, h, r, -1, chunk, 1)
        index = qpos[..., :, None] * tp + kpos[..., None, :]  # (B, H, R, C, bs, 2bs)
        dense = contrib.new_zeros(b, h, tp * tp)
        dense.scatter_add_(2, index.reshape(b, h, -1), contrib.reshape(b, h, -1))
        return dense.view(b, h, tp, tp)[:, :, :t, :t]

    def layer_view(self, index: int = 0, length: int | None = None):
        """Example ``index``'s computed (query, key, weight) pairs: a
        :class:`lanistr.viz.weights.SparseAttention` (never a ``T x T`` matrix)."""
        from lanistr.viz.weights import SparseAttention

        return SparseAttention.from_buckets(self.order[index], self.chunk_probs[index],
                                            self.round_weights[index], length)


@register_attention("lsh")
class LSHAttention(AttentionBackend):
    # shared_qk: keys are the normalised queries; ``k`` is ignored (MultiHeadAttention passes
    # None and skips the key projection).
    capabilities = Capabilities(causal=False, cross_attention=False, returns_weights=True,
                                weights_form="buckets", shared_qk=True,
                                complexity="O(T*n_hashes*bucket_size)")

    def __init__(self, config: LSHConfig, **kwargs):
        super().__init__(config, **kwargs)
        self._rotations: dict[tuple, torch.Tensor] = {}

    def rotations(self, n_half: int, d: int, device, dtype) -> torch.Tensor:
        """(R, D, n_half) random rotations; the first columns never depend on ``n_half``."""
        n_blocks = -(-n_half // _ROTATION_BLOCK)
        key = (n_blocks, d, device, dtype)
        if key not in self._rotations:
            base = self.config.seed * 1_000_003 + self.layer_idx * 10_007
            blocks = [
                torch.randn(d, _ROTATION_BLOCK,
                            generator=torch.Generator().manual_seed(base + r * 65_537 + j))
                for r in range(self.config.n_hashes) for j in range(n_blocks)]
            rot = torch.stack(blocks).view(self.config.n_hashes, n_blocks, d, _ROTATION_BLOCK)
            self._rotations[key] = rot.permute(0, 2, 1, 3).reshape(
                self.config.n_hashes, d, -1).to(device, dtype)
        return self._rotations[key][..., :n_half]

    @torch.no_grad()
    def hash(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D), valid (B, T) -> buckets (B, H, R, T) in [0, n_buckets), -1 at padding."""
        b, h, t, d = x.shape
        n_real = valid.sum(1)  # (B,)
        n_half = (n_real + 2 * self.config.bucket_size - 1) // (2 * self.config.bucket_size)
        rot = self.rotations(max(int(n_half.max()), 1), d, x.device, x.dtype)  # (R, D, nh)
        unused = torch.arange(rot.shape[-1], device=x.device) >= n_half[:, None]  # (B, nh)
        buckets = torch.empty(b, h, self.config.n_hashes, t, dtype=torch.long, device=x.device)
        for lo in range(0, t, _HASH_ROWS):
            proj = torch.einsum("bhtd,rdn->bhrtn", x[:, :, lo:lo + _HASH_ROWS], rot)
            skip = unused[:, None, None, None, :]  # columns beyond this sequence's buckets
            top, arg_top = proj.masked_fill(skip, float("-inf")).max(-1)
            low, arg_low = proj.masked_fill(skip, float("inf")).min(-1)
            # argmax over [xR, -xR]: column n of -xR is bucket n_half + n
            buckets[..., lo:lo + _HASH_ROWS] = torch.where(
                top >= -low, arg_top, arg_low + n_half[:, None, None, None])
        single = (n_real <= self.config.bucket_size)[:, None, None, None]
        buckets.masked_fill_(single, 0)
        return buckets.masked_fill_(~valid[:, None, None, :], -1)

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):
        b, h, t, d = q.shape
        bs, n_rounds = self.config.bucket_size, self.config.n_hashes
        n_chunks = -(-t // bs)
        tp = n_chunks * bs
        valid = (torch.ones(b, t, dtype=torch.bool, device=q.device) if key_padding_mask is None
                 else ~key_padding_mask)
        valid = F.pad(valid, (0, tp - t))  # (B, Tp)
        qp, vp = F.pad(q, (0, 0, 0, tp - t)), F.pad(v, (0, 0, 0, tp - t))  # (B, H, Tp, D)
        buckets = self.hash(qp, valid)  # (B, H, R, Tp)
        # Sort by (bucket, position); padding (-1) goes last.
        sort_key = torch.where(buckets < 0, torch.iinfo(torch.long).max, buckets)
        order = torch.sort(sort_key, dim=-1, stable=True).indices  # (B, H, R, Tp)

        def sort(x):  # (B, H, Tp, D) -> (B, H, R, C, bs, D), tokens in sorted order
            idx = order[..., None].expand(-1, -1, -1, -1, x.shape[-1])
            return x[:, :, None].expand(-1, -1, n_rounds, -1, -1).gather(3, idx).view(
                b, h, n_rounds, n_chunks, bs, x.shape[-1])

        def look_back(x):  # (..., C, bs, X) -> (..., C, 2bs, X): previous chunk, then own
            return torch.cat([x.roll(1, -3), x], -2)

        qs, vs = sort(qp), sort(vp)
        ks = F.normalize(qs, dim=-1)
        scores = torch.matmul(qs, look_back(ks).transpose(-1, -2)) / math.sqrt(d)  # (..,bs,2bs)
        qpos = order.view(b, h, n_rounds, n_chunks, bs)
        kpos = look_back(qpos[..., None])[..., 0]  # (B, H, R, C, 2bs)
        kvalid = valid.gather(1, kpos.flatten(1)).view(kpos.shape)
        kvalid[..., 0, :bs] = False  # the first chunk has no previous chunk
        allowed = kvalid[..., None, :]  # (B, H, R, C, 1, 2bs)
        is_self = kpos[..., None, :] == qpos[..., :, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
        scores = scores.masked_fill(is_self & allowed, torch.finfo(scores.dtype).min / 2)
        lse = torch.logsumexp(scores, -1, keepdim=True)  # (B, H, R, C, bs, 1)
        probs = (scores - lse.nan_to_num(0.0, neginf=0.0)).exp()  # rows with no key: 0
        out_r = torch.matmul(self.drop(probs), look_back(vs))  # (.., bs, D)
        # Back to positions, then combine the rounds by their log-sum-exp.
        undo = order.argsort(-1)
        out_r = out_r.view(b, h, n_rounds, tp, d).gather(
            3, undo[..., None].expand(-1, -1, -1, -1, d))
        lse = lse.view(b, h, n_rounds, tp).gather(3, undo)
        round_w = torch.softmax(lse, 2).nan_to_num(0.0)  # (B, H, R, Tp)
        out = (round_w[..., None] * out_r).sum(2)[:, :, :t]  # (B, H, T, D)
        weights = None
        if need_weights:
            weights = LSHWeights(buckets[..., :t], order, probs.detach(),
                                 round_w[..., :t].detach())
        return out, weights
