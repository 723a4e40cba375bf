"""Attention weights of one example, layer by layer, in the form the backend produced them.

A model returns, per layer, a dense ``(B, H, T, T)`` tensor or a backend's compact
:class:`~lanistr.nn.attention.SparseAttentionWeights`. :func:`as_layers` turns either into a
list of :class:`LayerAttention` (numpy, one example, padding removed) that the figures and the
HTML page read through a few operations that never build a ``T x T`` matrix for a sparse form:

- ``rows(q)``: what query ``q`` attends to, ``(H, T)``;
- ``window(start, stop)``: the dense square for tokens ``[start, stop)``, NaN where the backend
  computed nothing (outside a band, outside the LSH buckets);
- ``aggregate(starts)``: merge contiguous token groups (word pieces into words, tokens into
  blocks): attention is summed over the key pieces and averaged over the query pieces, so every
  row still sums to what it summed to before;
- ``left_matmul(x)``: ``x @ mean_h(A)``, which is all attention rollout needs.

One class per form a backend produces (``Capabilities.weights_form``):

- :class:`DenseAttention` ``(H, T, T)`` (``full``);
- :class:`BandAttention` ``(H, T, 2w+1)`` + global tokens (``sliding_window``);
- :class:`LowRankAttention`, the factors ``probs (H, T, k)`` and ``F (T, k)`` (``linformer``);
- :class:`SparseAttention`, the (query, key, weight) pairs of each head (``lsh`` buckets).

A backend's :class:`~lanistr.nn.attention.SparseAttentionWeights` builds its own view with
``layer_view(index, length)`` (the default densifies). Each is checked against the backend's
``densify()`` in tests/test_viz.py, for every backend in the registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lanistr.errors import LanistrError

# Largest T for which a sparse backend's weights are densified, or a full rollout matrix built.
MAX_DENSE_TOKENS = 2048


class LayerAttention:
    """One layer's attention for one example. NaN in ``rows``/``window`` marks a weight the
    backend never computed (drawn as "not computed", not as zero)."""

    form = "?"
    num_heads: int
    length: int

    def rows(self, query: int) -> np.ndarray:  # pragma: no cover - abstract
        """Weights of query ``query`` on every key, ``(H, T)``; NaN where not computed."""
        raise NotImplementedError

    def window(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        """Dense ``(H, n, n)`` square of tokens ``[start, stop)``; NaN where not computed."""
        raise NotImplementedError

    def aggregate(self, starts: np.ndarray) -> LayerAttention:  # pragma: no cover - abstract
        """Merge the contiguous groups starting at ``starts`` (sorted, ``starts[0] == 0``):
        sum over the keys of a group, mean over its queries."""
        raise NotImplementedError

    def left_matmul(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """``x @ mean_h(A)`` for ``x`` of shape ``(m, T)``."""
        raise NotImplementedError

    def row_sums(self) -> np.ndarray:  # pragma: no cover - abstract
        """``(H, T)``: 1 for every real query of a softmax."""
        raise NotImplementedError

    def dense(self) -> np.ndarray:
        """The whole ``(H, T, T)`` matrix with zeros where not computed (small T only)."""
        if self.length > MAX_DENSE_TOKENS:
            raise LanistrError(
                f"refusing to build a dense {self.length}x{self.length} attention matrix "
                f"(limit {MAX_DENSE_TOKENS}); show a window or blocks instead")
        return np.nan_to_num(self.window(0, self.length), nan=0.0)


class DenseAttention(LayerAttention):
    """``weights`` ``(H, T, T)``; ``computed`` ``(T, T)`` or ``(H, T, T)`` bool, or None when
    every weight was computed."""

    form = "dense"

    def __init__(self, weights: np.ndarray, computed: np.ndarray | None = None):
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 3 or weights.shape[1] != weights.shape[2]:
            raise ValueError(f"expected (H, T, T) attention weights, got shape {weights.shape}")
        self.weights = weights  # (H, T, T)
        self.computed = computed
        self.num_heads, self.length = weights.shape[0], weights.shape[1]

    def rows(self, query):
        out = self.weights[:, query, :]
        if self.computed is not None:
            out = np.where(self.computed[..., query, :], out, np.nan)
        return out

    def window(self, start, stop):
        out = self.weights[:, start:stop, start:stop]
        if self.computed is not None:
            out = np.where(self.computed[..., start:stop, start:stop], out, np.nan)
        return out

    def aggregate(self, starts):
        starts = _check_starts(starts, self.length)
        counts = np.diff(np.append(starts, self.length)).astype(np.float32)
        summed = np.add.reduceat(self.weights, starts, axis=2)  # (H, T, G) sum over keys
        merged = np.add.reduceat(summed, starts, axis=1) / counts[None, :, None]  # (H, G, G)
        computed = None
        if self.computed is not None:
            c = self.computed.astype(np.int32)
            computed = np.add.reduceat(np.add.reduceat(c, starts, axis=-1), starts, axis=-2) > 0
        return DenseAttention(merged, computed)

    def left_matmul(self, x):
        return _matmul(x, self.weights.mean(axis=0))

    def row_sums(self):
        return self.weights.sum(axis=-1)


class LowRankAttention(LayerAttention):
    """Linformer: ``A = probs @ proj^T`` with ``probs`` ``(H, T, k)`` (each query over the
    ``k`` projected rows) and ``proj`` ``(T, k)`` (the value projection ``F``). ``A`` mixes
    the values; its entries need not be probabilities (``F`` is learned). Every operation
    works on the factors, so a long input never becomes a ``T x T`` matrix."""

    form = "lowrank"

    def __init__(self, probs: np.ndarray, proj: np.ndarray):
        self.probs = np.asarray(probs, dtype=np.float32)  # (H, T, k)
        self.proj = np.asarray(proj, dtype=np.float32)  # (T, k)
        if self.probs.ndim != 3 or self.proj.shape != (self.probs.shape[1], self.probs.shape[2]):
            raise ValueError(f"low-rank factors of shapes {self.probs.shape} and "
                             f"{self.proj.shape} do not match")
        self.num_heads, self.length = self.probs.shape[0], self.probs.shape[1]

    def rows(self, query):
        return _matmul(self.probs[:, query, :], self.proj.T)  # (H, T)

    def window(self, start, stop):
        return _matmul(self.probs[:, start:stop], self.proj[start:stop].T)  # (H, n, n)

    def aggregate(self, starts):
        # mean over a query group of sum over a key group = (mean of probs) @ (sum of proj)^T
        starts = _check_starts(starts, self.length)
        counts = np.diff(np.append(starts, self.length)).astype(np.float32)
        probs = np.add.reduceat(self.probs, starts, axis=1) / counts[None, :, None]
        return LowRankAttention(probs, np.add.reduceat(self.proj, starts, axis=0))

    def left_matmul(self, x):
        return _matmul(_matmul(x, self.probs.mean(axis=0)), self.proj.T)

    def row_sums(self):
        return _matmul(self.probs, self.proj.sum(axis=0))  # (H, T)


class SparseAttention(LayerAttention):
    """Weights a backend computed for a few (query, key) pairs per head, e.g. LSH buckets:
    ``query``, ``key`` ``(H, E)`` int and ``values`` ``(H, E)``. A pair listed more than once
    (found in several hashing rounds) counts with the sum of its values; a pair never listed
    was never computed."""

    form = "buckets"

    def __init__(self, query: np.ndarray, key: np.ndarray, values: np.ndarray, length: int):
        self.query = np.asarray(query)
        self.key = np.asarray(key)
        self.values = np.asarray(values, dtype=np.float32)
        if not self.query.shape == self.key.shape == self.values.shape or self.query.ndim != 2:
            raise ValueError(f"sparse entries of shapes {self.query.shape}, {self.key.shape}, "
                             f"{self.values.shape} do not match")
        self.num_heads, self.length = self.values.shape[0], int(length)

    @classmethod
    def from_buckets(cls, order, chunk_probs, round_weights,
                     length: int | None = None) -> SparseAttention:
        """One example of ``LSHWeights`` (torch: ``order`` ``(H, R, Tp)``, ``chunk_probs``
        ``(H, R, C, bs, 2bs)``, ``round_weights`` ``(H, R, T)``): every (query, key) pair of
        every round's chunk pairs, weighted by the round's weight, as in its ``densify()``; the
        wrapped-around "previous chunk" of the first chunk, padding and the internal padding
        positions were never computed."""
        import torch.nn.functional as F

        order = order.long().cpu()
        probs = chunk_probs.detach().float().cpu()
        rounds = round_weights.detach().float().cpu()
        h, r, c, bs, _ = probs.shape
        t_all, tp = rounds.shape[-1], order.shape[-1]
        t = t_all if length is None else length
        rw = F.pad(rounds, (0, tp - t_all)).gather(2, order).view(h, r, c, bs, 1)  # sorted
        values = (probs * rw).numpy()  # (H, R, C, bs, 2bs)
        qpos = order.view(h, r, c, bs).numpy().astype(np.int32)
        kpos = np.concatenate([np.roll(qpos, 1, axis=2), qpos], axis=-1)  # (H, R, C, 2bs)
        shape = values.shape[1:]
        qs, ks, vs = [], [], []
        for head in range(h):  # one head at a time: only the kept pairs are materialised
            q = np.broadcast_to(qpos[head][..., :, None], shape)
            k = np.broadcast_to(kpos[head][..., None, :], shape)
            keep = (q < t) & (k < t)
            keep[:, 0, :, :bs] = False  # the first chunk has no previous chunk
            qs.append(q[keep])
            ks.append(k[keep])
            vs.append(values[head][keep])
        e = max(len(x) for x in qs)

        def stack(parts, dtype):
            out = np.zeros((h, e), dtype=dtype)
            for head, x in enumerate(parts):
                out[head, :len(x)] = x
            return out

        # Padding pairs point at (0, 0) with value 0: they add nothing but mark (0, 0) as
        # computed, which it always is (every token is in a chunk with itself).
        return cls(stack(qs, np.int32), stack(ks, np.int32), stack(vs, np.float32), t)

    def _scatter(self, q0, q1, k0, k1) -> np.ndarray:
        """Dense ``(H, q1-q0, k1-k0)`` block, NaN where no pair was listed."""
        nq, nk = q1 - q0, k1 - k0
        out = np.full((self.num_heads, nq * nk), np.nan, dtype=np.float32)
        for h in range(self.num_heads):
            q, k = self.query[h], self.key[h]
            keep = (q >= q0) & (q < q1) & (k >= k0) & (k < k1)
            flat = (q[keep] - q0).astype(np.int64) * nk + (k[keep] - k0)
            seen = np.bincount(flat, minlength=nq * nk) > 0
            total = np.bincount(flat, weights=self.values[h, keep], minlength=nq * nk)
            out[h, seen] = total[seen]
        return out.reshape(self.num_heads, nq, nk)

    def rows(self, query):
        return self._scatter(query, query + 1, 0, self.length)[:, 0]

    def window(self, start, stop):
        return self._scatter(start, stop, start, stop)

    def aggregate(self, starts):
        starts = _check_starts(starts, self.length)
        group = np.zeros(self.length, dtype=np.int32)
        group[starts[1:]] = 1
        group = np.cumsum(group, dtype=np.int32)
        counts = np.bincount(group).astype(np.float32)
        gq = group[self.query]
        return SparseAttention(gq, group[self.key], self.values / counts[gq], len(starts))

    def _mean_transposed(self):
        """``mean_h(A)^T`` as a torch CSR matrix (cached): ``x @ A = (A^T @ x^T)^T``."""
        cached = self.__dict__.get("_csr")
        if cached is None:
            import warnings

            import torch

            idx = torch.from_numpy(np.stack([self.key.ravel(), self.query.ravel()]).astype(np.int64))
            vals = torch.from_numpy(self.values.ravel() / self.num_heads)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(idx, vals, (self.length, self.length),
                                              check_invariants=False).coalesce()
                cached = self.__dict__["_csr"] = coo.to_sparse_csr()
        return cached

    def left_matmul(self, x):
        import torch

        xt = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32).T))
        return (self._mean_transposed() @ xt).numpy().T

    def row_sums(self):
        return np.stack([np.bincount(self.query[h], weights=self.values[h], minlength=self.length)
                         for h in range(self.num_heads)]).astype(np.float32)


class BandAttention(LayerAttention):
    """Sliding-window attention with optional global tokens (Longformer), kept compact.

    - ``band`` ``(H, T, 2w+1)``: ``band[h, i, w + d]`` is the weight of query ``i`` on key
      ``i + d`` for ``|d| <= w`` (0 outside the sequence);
    - ``global_positions`` ``(G,)``: tokens that attend to every key and that every query
      attends to;
    - ``global_columns`` ``(H, T, G)``: weight of key ``global_positions[g]`` for the rows whose
      band does not contain it (0 where it does);
    - ``global_rows`` ``(H, G, T)``: the full rows of the global queries (``band`` and
      ``global_columns`` are ignored on those rows).

    This is the layout of ``lanistr.nn.attention.sliding_window.SlidingWindowWeights``.
    """

    form = "band"

    def __init__(self, band: np.ndarray, window: int, global_positions=(),
                 global_columns: np.ndarray | None = None, global_rows: np.ndarray | None = None):
        band = np.asarray(band, dtype=np.float32)
        if band.ndim != 3 or band.shape[2] != 2 * window + 1:
            raise ValueError(f"expected a (H, T, {2 * window + 1}) band, got shape {band.shape}")
        self.band = band  # (H, T, 2w+1)
        self.w = int(window)
        self.num_heads, self.length = band.shape[0], band.shape[1]
        h, t = self.num_heads, self.length
        self.gpos = np.asarray(global_positions, dtype=np.int64).reshape(-1)  # (G,)
        g = len(self.gpos)
        self.gcols = (np.zeros((h, t, g), np.float32) if global_columns is None
                      else np.asarray(global_columns, dtype=np.float32))  # (H, T, G)
        self.grows = (np.zeros((h, g, t), np.float32) if global_rows is None
                      else np.asarray(global_rows, dtype=np.float32))  # (H, G, T)
        if self.gcols.shape != (h, t, g) or self.grows.shape != (h, g, t):
            raise ValueError(f"global weights of shapes {self.gcols.shape} and "
                             f"{self.grows.shape} do not match {g} global tokens, {h} heads, "
                             f"{t} tokens")
        self.is_global = np.zeros(t, dtype=bool)
        self.is_global[self.gpos] = True

    @classmethod
    def from_band(cls, band: np.ndarray, window: int, global_positions: np.ndarray,
                  global_columns: np.ndarray, global_rows: np.ndarray,
                  length: int | None = None) -> BandAttention:
        """One example of ``SlidingWindowWeights`` (band ``(H, T, 2w+1)``, global columns
        ``(H, T, G)`` and rows ``(H, G, T)``), its first ``length`` tokens."""
        w = int(window)
        t = band.shape[1] if length is None else length
        gpos = np.asarray(global_positions, dtype=np.int64).reshape(-1)
        keep = gpos < t  # global positions inside the real tokens
        gcols = grows = None
        if len(gpos):
            gcols = np.asarray(global_columns)[:, :t][:, :, keep]
            grows = np.asarray(global_rows)[:, :, :t][:, keep]
        band = np.asarray(band)[:, :t]
        keys = np.arange(t)[:, None] + np.arange(2 * w + 1)[None, :] - w
        band = np.where((keys >= 0) & (keys < t), band, 0.0)
        return cls(band, w, gpos[keep], gcols, grows)

    def entries(self, start: int = 0, stop: int | None = None):
        """Every computed weight of the queries ``[start, stop)`` as flat arrays
        ``(query, key, values (H, E))``: band cells inside the sequence, global columns outside
        the band, global rows. Each (query, key) pair occurs once."""
        stop = self.length if stop is None else stop
        q = np.arange(start, stop)
        q = q[~self.is_global[q]]
        slot = np.arange(2 * self.w + 1)[None, :]
        k = q[:, None] + slot - self.w  # (n, 2w+1)
        valid = (k >= 0) & (k < self.length)
        qb = np.broadcast_to(q[:, None], k.shape)[valid]
        sb = np.broadcast_to(slot, k.shape)[valid]
        parts_q, parts_k, parts_v = [qb], [k[valid]], [self.band[:, qb, sb]]
        if len(self.gpos):
            far = np.abs(self.gpos[None, :] - q[:, None]) > self.w  # (n, G)
            qi, gi = np.nonzero(far)
            parts_q.append(q[qi])
            parts_k.append(self.gpos[gi])
            parts_v.append(self.gcols[:, q[qi], gi])
            mine = np.nonzero((self.gpos >= start) & (self.gpos < stop))[0]
            parts_q.append(np.repeat(self.gpos[mine], self.length))
            parts_k.append(np.tile(np.arange(self.length), len(mine)))
            parts_v.append(self.grows[:, mine, :].reshape(self.num_heads, -1))
        return np.concatenate(parts_q), np.concatenate(parts_k), np.concatenate(parts_v, axis=1)

    def rows(self, query):
        out = np.full((self.num_heads, self.length), np.nan, dtype=np.float32)
        _, k, v = self.entries(query, query + 1)
        out[:, k] = v
        return out

    def window(self, start, stop):
        n = stop - start
        out = np.full((self.num_heads, n, n), np.nan, dtype=np.float32)
        q, k, v = self.entries(start, stop)
        inside = (k >= start) & (k < stop)
        out[:, q[inside] - start, k[inside] - start] = v[:, inside]
        return out

    def aggregate(self, starts):
        starts = _check_starts(starts, self.length)
        g = len(starts)
        group = np.zeros(self.length, dtype=np.int64)
        group[starts[1:]] = 1
        group = np.cumsum(group)  # (T,) group of each token
        counts = np.bincount(group, minlength=g).astype(np.float64)
        q, k, v = self.entries()
        gq, gk = group[q], group[k]
        ggroups = np.unique(group[self.gpos])  # groups holding a global token
        is_ggroup = np.zeros(g, dtype=bool)
        is_ggroup[ggroups] = True
        in_band = ~is_ggroup[gq] & ~self.is_global[k]
        # Group indices move no faster than token indices, so the merged band is at most w wide.
        wg = int(np.max(np.abs(gk - gq)[in_band])) if in_band.any() else 0

        def scatter(flat, size, values):
            return np.stack([np.bincount(flat, weights=x, minlength=size) for x in values]
                            ).astype(np.float64)

        if 2 * wg + 1 >= g:  # the band covers everything: a small dense matrix is cheaper
            merged = scatter(gq * g + gk, g * g, v).reshape(self.num_heads, g, g)
            computed = np.bincount(gq * g + gk, minlength=g * g).reshape(g, g) > 0
            merged = (merged / counts[None, :, None]).astype(np.float32)
            return DenseAttention(merged, None if computed.all() else computed)
        # Route each weight: a global group's row, else the band, else a global column.
        rank = np.full(g, -1)
        rank[ggroups] = np.arange(len(ggroups))
        row_part = is_ggroup[gq]
        band_part = ~row_part & (np.abs(gk - gq) <= wg)
        col_part = ~row_part & ~band_part
        width = 2 * wg + 1
        band = scatter(gq[band_part] * width + gk[band_part] - gq[band_part] + wg, g * width,
                       v[:, band_part]).reshape(self.num_heads, g, width)
        cols = scatter(gq[col_part] * len(ggroups) + rank[gk[col_part]], g * len(ggroups),
                       v[:, col_part]).reshape(self.num_heads, g, len(ggroups))
        rows = scatter(rank[gq[row_part]] * g + gk[row_part], len(ggroups) * g,
                       v[:, row_part]).reshape(self.num_heads, len(ggroups), g)
        band /= counts[None, :, None]
        cols /= counts[None, :, None]
        rows /= counts[ggroups][None, :, None]
        return BandAttention(band.astype(np.float32), wg, ggroups, cols, rows)

    def _blocks(self) -> np.ndarray:
        """``mean_h`` of the band as dense tiles ``(nb, 3, b, b)``: tile ``[I, r]`` is the
        square of query block ``I`` and key block ``I + r - 1`` (blocks of ``b >= w`` tokens
        see only their neighbours). Global rows and columns are left out."""
        cached = self.__dict__.get("_tiles")
        if cached is not None:
            return cached
        b = max(self.w, 64)
        nb = -(-self.length // b)
        q = np.arange(self.length)
        q = q[~self.is_global[q]]
        slot = np.arange(2 * self.w + 1)[None, :]
        k = q[:, None] + slot - self.w
        valid = (k >= 0) & (k < self.length)
        qv = np.broadcast_to(q[:, None], k.shape)[valid]
        kv, sv = k[valid], np.broadcast_to(slot, k.shape)[valid]
        tiles = np.zeros((nb, 3, b, b), dtype=np.float32)
        tiles[qv // b, kv // b - qv // b + 1, qv % b, kv % b] = self.band.mean(axis=0)[qv, sv]
        self.__dict__["_tiles"] = tiles
        return tiles

    def left_matmul(self, x):
        tiles = self._blocks()
        nb, _, b, _ = tiles.shape
        t, m = self.length, x.shape[0]
        xp = np.zeros((m, nb * b), dtype=np.float32)
        xp[:, :t] = x
        xp[:, self.gpos] = 0  # the global rows are full rows, handled below
        xb = xp.reshape(m, nb, b).transpose(1, 0, 2)  # (nb, m, b)
        y = np.zeros((nb + 2, m, b), dtype=xp.dtype)  # key blocks -1 .. nb
        for r in range(3):  # key block I + r - 1 of query block I
            y[r:r + nb] += _matmul(xb, tiles[:, r])
        y = y[1:nb + 1].transpose(1, 0, 2).reshape(m, nb * b)[:, :t]
        if len(self.gpos):
            y[:, self.gpos] += _matmul(xp[:, :t], self.gcols.mean(axis=0))  # (m, G)
            y += _matmul(x[:, self.gpos], self.grows.mean(axis=0))  # (m, T)
        return y

    def row_sums(self):
        sums = self.band.sum(axis=-1) + self.gcols.sum(axis=-1)  # (H, T)
        sums[:, self.gpos] = self.grows.sum(axis=-1)
        return sums


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float32 through torch, whose BLAS is many times faster than the one numpy
    wheels ship on some machines (the product dominates rollout for long inputs)."""
    import torch

    a = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return torch.matmul(a, b).numpy()


def _check_starts(starts, length: int) -> np.ndarray:
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= length:
        raise ValueError(f"group starts must rise strictly from 0 to below {length}, got {starts}")
    return starts


# ------------------------------------------------------------------------------------------
# from model outputs


def as_layers(attentions, index: int = 0, length: int | None = None) -> list[LayerAttention]:
    """Per-layer :class:`LayerAttention` of example ``index``.

    ``attentions``: what a model returns with ``output_attentions=True`` (a sequence with one
    ``(B, H, T, T)`` tensor or :class:`~lanistr.nn.attention.SparseAttentionWeights` per
    layer), or a sequence of ``(H, T, T)`` arrays, or one array ``(L, H, T, T)``.
    ``length`` keeps the first ``length`` tokens (drop the padding of a batch).
    """
    if attentions is None:
        raise LanistrError("no attention weights: call the model with output_attentions=True")
    if hasattr(attentions, "ndim") and attentions.ndim == 4:
        attentions = list(attentions)
    if isinstance(attentions, LayerAttention) or hasattr(attentions, "ndim"):
        attentions = [attentions]
    layers = [_one_layer(a, index, length) for a in attentions]
    if not layers:
        raise LanistrError("no attention weights: the model has no layers")
    shapes = {(la.num_heads, la.length) for la in layers}
    if len(shapes) > 1:
        raise ValueError(f"layers disagree on (heads, tokens): {sorted(shapes)}")
    return layers


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _one_layer(a, index: int, length: int | None) -> LayerAttention:
    if isinstance(a, LayerAttention):
        if length is None or length == a.length:
            return a
        w = a.window(0, length)  # (H, n, n), NaN where not computed
        computed = ~np.isnan(w)
        return DenseAttention(np.nan_to_num(w, nan=0.0), None if computed.all() else computed)
    from lanistr.nn.attention.base import SparseAttentionWeights

    if isinstance(a, SparseAttentionWeights):  # each form gives its own compact view
        return a.layer_view(index, length)
    w = _numpy(a)
    if w.ndim == 4:
        w = w[index]
    elif w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"expected (B, H, T, T) or (H, T, T) attention weights, got {w.shape}")
    n = w.shape[-1] if length is None else length
    return DenseAttention(w[:, :n, :n])


# ------------------------------------------------------------------------------------------
# word pieces


def word_groups(tokens: Sequence[str], word_ids: Sequence[int | None] | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Where each word starts, and its text. With ``word_ids`` (from the tokenizer) a word is
    a run of tokens with the same id; without, a ``##`` piece continues the previous word.
    Special tokens (word id None, or ``[XXX]``) are words of their own."""
    n = len(tokens)
    if word_ids is not None and len(word_ids) < n:
        raise ValueError(f"{len(word_ids)} word ids for {n} tokens")
    starts: list[int] = []
    for t in range(n):
        if t == 0:
            new = True
        elif word_ids is not None:
            new = word_ids[t] is None or word_ids[t - 1] is None or word_ids[t] != word_ids[t - 1]
        else:
            new = not tokens[t].startswith("##") or _is_special(tokens[t - 1])
        if new:
            starts.append(t)
    bounds = [*starts, n]
    words = ["".join(_piece(tokens[i], i == a) for i in range(a, b))
             for a, b in zip(bounds[:-1], bounds[1:])]
    return np.asarray(starts, dtype=np.int64), words


def _is_special(token: str) -> bool:
    return token.startswith("[") and token.endswith("]")


def _piece(token: str, first: bool) -> str:
    return token if first or not token.startswith("##") else token[2:]


def merge_word_pieces(attentions, tokens: Sequence[str],
                      word_ids: Sequence[int | None] | None = None):
    """Merge word pieces back into words: attention is summed over a word's key pieces and
    averaged over its query pieces, so each row keeps its sum.

    ``attentions``: one array ``(..., T, T)`` (returned merged as ``(..., W, W)``), or the
    per-layer sequence a model returns (returned as a list of :class:`LayerAttention`).
    Returns ``(merged, words)``.
    """
    starts, words = word_groups(tokens, word_ids)
    if hasattr(attentions, "ndim") and attentions.ndim >= 2:
        w = _numpy(attentions)
        lead = w.shape[:-2]
        merged = DenseAttention(w.reshape(-1, *w.shape[-2:])).aggregate(starts).weights
        return merged.reshape(*lead, len(words), len(words)), words
    layers = as_layers(attentions, length=len(tokens))
    return [layer.aggregate(starts) for layer in layers], words


# ------------------------------------------------------------------------------------------
# rollout


def rollout_rows(layers: Sequence[LayerAttention], x: np.ndarray, residual: bool = True
                 ) -> np.ndarray:
    """``x @ R`` where ``R = Â_L ... Â_1`` is the attention rollout of Abnar & Zuidema (2020):
    ``Â = rownorm(mean_h(A) + I)``. ``x`` is ``(m, T)``: rows of the identity give rows of R,
    a block-averaging matrix gives block rows, without ever forming R for a long input."""
    x = np.asarray(x, dtype=np.float32)  # float32 throughout: BLAS, not numpy's slow mixed path
    for layer in reversed(layers):
        s = layer.row_sums().mean(axis=0)  # (T,) row sums of mean_h(A)
        if residual:
            scaled = x / (s + 1.0)[None, :]  # column i of x times 1 / rowsum(Â)_i
            x = layer.left_matmul(scaled) + scaled
        else:
            x = layer.left_matmul(x / np.where(s > 0, s, 1.0)[None, :])
    return x


def rollout(attentions, *, residual: bool = True, index: int = 0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020), ``(T, T)``: average the heads of each layer,
    add the identity (the residual connection), re-normalise the rows, multiply through the
    layers (``R = Â_L ... Â_1``). Row ``i`` says how much each input token contributed to
    position ``i`` of the last layer."""
    layers = as_layers(attentions, index)
    t = layers[0].length
    if t > MAX_DENSE_TOKENS:
        raise LanistrError(f"rollout of {t} tokens would be a {t}x{t} matrix (limit "
                           f"{MAX_DENSE_TOKENS}); use rollout_rows() for the rows you need")
    return rollout_rows(layers, np.eye(t), residual=residual)


def block_starts(length: int, max_blocks: int) -> np.ndarray:
    """Starts of at most ``max_blocks`` equal blocks covering ``length`` tokens; the block size
    is a round number (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50, 64, ...) so labels read well."""
    need = max(1, math.ceil(length / max(1, max_blocks)))
    nice = {int(m * 10**k) for k in range(12) for m in (1, 2, 2.5, 4, 5, 8)}
    nice |= {2**k for k in range(40)}
    size = min(x for x in nice if x >= need)
    return np.arange(0, length, size, dtype=np.int64)
