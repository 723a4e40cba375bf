"""Sliding-window attention with global tokens (Longformer), computed in blocks.

Token ``i`` attends to the keys ``j`` with ``|i - j| <= window`` (only ``j <= i`` when causal),
plus every *global* position; a global position's own row attends to every key. A global key
that already lies inside a row's band is counted once (in the band), never twice.

The band is never materialised as a ``T x T`` matrix. Queries are cut into blocks of ``s``
rows; block ``b`` (rows ``[b*s, b*s + s)``) scores against the ``L = s + 2*span`` keys
``[b*s - span, b*s + s + span)`` (``span = ceil(window / s) * s``), and a static ``(s, L)`` band
mask plus the padding mask select the real band (masked scores get a huge negative *finite*
bias, so no row turns into NaN). The global keys are appended to every tile; the global
queries' rows are computed in full and replace what the band gave them. The work runs in
chunks of blocks inside a custom autograd function that saves no probabilities: the backward
recomputes each chunk's softmax (as flash attention does) and accumulates the gradients in
place. Time and memory are ``O(T * window)`` and the transient memory is a few MB whatever
``T`` is.

A row with no allowed key at all (a padded query farther than ``window`` from every real key,
with no real global token) outputs zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lanistr.nn.attention.base import (
    AttentionBackend,
    Capabilities,
    SparseAttentionWeights,
    register_attention,
)

# Scores per chunk. A chunk holds a few buffers of that many elements (scores, key and value
# tiles; a few more in the backward), so the transient memory is a few hundred KB to a few MB
# whatever T is. Inference: 80k scores = two 64-query blocks of the default window (256)
# per chunk; halving the chunk count against one block per chunk cuts the Python and kernel
# launch overhead that dominates at 16k tokens, while the forward's peak stays on par with
# SDPA's (benchmarks/long_attention.py). When gradients are needed the forward and the
# backward use larger chunks (the backward's peak is dominated by the gradients anyway).
# Both passes of one call must cut the same chunks: the dropout masks are drawn per chunk.
_CHUNK_SCORES = {"inference": 5 * 2**14, "training": 2**17}


@dataclass
class SlidingWindowWeights(SparseAttentionWeights):
    """Compact sliding-window weights (probabilities before dropout).

    - ``band`` ``(B, H, T, 2w+1)``: ``band[..., i, w + d]`` is the weight of key ``i + d``
      (``-w <= d <= w``, zero outside ``[0, T)``, at padding, and beyond ``i`` when causal);
      ``w = window`` is the effective window ``min(window, T - 1)``.
    - ``global_positions`` ``(G,)``: the global positions (sorted, all ``< T``).
    - ``global_columns`` ``(B, H, T, G)``: weight of key ``global_positions[g]`` for the rows
      whose band does not contain it (zero where the band does, so nothing is counted twice).
    - ``global_rows`` ``(B, H, G, T)``: the full rows of the global queries. ``band`` and
      ``global_columns`` are zero on those rows.
    """

    band: torch.Tensor
    window: int
    global_positions: torch.Tensor
    global_columns: torch.Tensor
    global_rows: torch.Tensor

    form = "band"

    def densify(self, max_tokens: int = 4096) -> torch.Tensor:
        b, h, t, _ = self.band.shape
        self._check_size(t, max_tokens)
        w = self.window
        wide = self.band.new_zeros(b, h, t, t + 2 * w)  # column c is key c - w
        # Row i of the band starts at column i of `wide`: a strided view puts it there.
        wide.as_strided(self.band.shape, (h * t * (t + 2 * w), t * (t + 2 * w), t + 2 * w + 1, 1),
                        wide.storage_offset()).copy_(self.band)
        dense = wide[..., w:w + t].contiguous()  # (B, H, T, T)
        if len(self.global_positions):
            dense.index_add_(3, self.global_positions, self.global_columns)
            dense[:, :, self.global_positions, :] = self.global_rows
        return dense

    def layer_view(self, index: int = 0, length: int | None = None):
        """Example ``index`` kept compact: a :class:`lanistr.viz.weights.BandAttention`."""
        from lanistr.viz.weights import BandAttention

        def numpy(x):
            return x[index].detach().float().cpu().numpy()

        return BandAttention.from_band(numpy(self.band), self.window,
                                       self.global_positions.cpu().numpy(),
                                       numpy(self.global_columns), numpy(self.global_rows),
                                       length)


@dataclass(frozen=True)
class _Plan:
    """Geometry of the blocked band: ``T`` tokens, effective window ``w``, query blocks of ``s``
    rows, each scoring the ``L = s + 2*span`` keys that start ``span`` before the block, then
    the ``G`` global keys (a tile row has ``L + G`` columns)."""

    t: int
    w: int
    s: int
    span: int
    causal: bool

    @property
    def L(self) -> int:  # noqa: N802 - the usual name for the key tile length
        return self.s + 2 * self.span

    @property
    def blocks(self) -> int:
        return -(-self.t // self.s)

    @classmethod
    def make(cls, t: int, window: int, causal: bool) -> _Plan:
        w = min(window, max(t - 1, 0))
        # Cost per query row ~ L, plus a per-block overhead that favours larger blocks.
        s = min((32, 64, 128), key=lambda s: (s + 2 * s * -(-w // s)) * (1 + 16 / s))
        s = min(s, max(t, 1))
        return cls(t=t, w=w, s=s, span=s * -(-w // s), causal=causal)

    def allowed(self, qpos: torch.Tensor, kpos: torch.Tensor) -> torch.Tensor:
        """Band rule for query positions ``qpos`` (..., s, 1) and key positions (..., 1, L)."""
        d = kpos - qpos
        ok = d.abs() <= self.w
        return ok & (d <= 0) if self.causal else ok

    def global_allowed(self, qpos: torch.Tensor, gpos: torch.Tensor) -> torch.Tensor:
        """Global-column rule: the global key is outside the row's band (and causal)."""
        ok = (gpos - qpos).abs() > self.w
        return ok & (gpos <= qpos) if self.causal else ok


class _Workspace:
    """Per-call scratch buffers reused by every chunk: no allocation (and no fresh pages, no
    allocator fragmentation) per chunk. Buffers are sized for the widest chunk the first
    time they are asked for, so a narrow edge chunk first does not cause a second, larger
    allocation later."""

    def __init__(self, like: torch.Tensor, tiling: _Tiling):
        self.like, self.buffers, self.widest, self.scale = like, {}, tiling.widest, 1.0

    def chunk(self, ch) -> None:
        """The chunk the next buffers are for: (bi, h0, h1, b0, b1, plain)."""
        self.scale = self.widest / ((ch[2] - ch[1]) * (ch[4] - ch[3]))

    def get(self, name: str, shape) -> torch.Tensor:
        n = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = self.buffers[name] = self.like.new_empty(max(n, int(n * self.scale)))
        return buf[:n].view(shape)


class _Tiling:
    """Per-call state shared by the forward and backward passes: the chunks (batch row ``bi``,
    heads ``[h0, h1)``, query blocks ``[b0, b1)``, ``plain``) and the score bias of each.

    A chunk is *plain* when its key range lies inside ``[0, T)``, holds no padding and no
    global token interacts with its band; a plain chunk reads its rows and tiles as strided
    views and uses one static ``(s, L + G)`` bias. The other chunks (sequence edges, padding,
    near a global token) zero-pad their slices and build their own bias.
    """

    def __init__(self, plan: _Plan, q: torch.Tensor, key_valid: torch.Tensor | None,
                 gpos: torch.Tensor, budget: int):
        b, h, t, _ = q.shape
        self.plan, self.key_valid, self.gpos = plan, key_valid, gpos
        self.glist = gpos.tolist()
        self.neg = torch.finfo(q.dtype).min / 2  # finite: a row with no allowed key stays finite
        dev = q.device
        rows = torch.arange(plan.s, device=dev, dtype=torch.int32)[:, None]
        band = plan.allowed(rows, torch.arange(plan.L, device=dev, dtype=torch.int32)[None, :]
                            - plan.span)
        self.band = band  # (s, L)
        static = torch.cat([band, band.new_ones(plan.s, len(gpos))], 1)  # (s, L + G)
        self.static_bias = torch.zeros(static.shape, dtype=q.dtype, device=dev).masked_fill_(
            ~static, self.neg)[None]
        tile = plan.s * (plan.L + len(gpos))
        c = max(1, min(plan.blocks, budget // tile))
        hstep = max(1, min(h, budget // (tile * c)))

        def is_plain(b0: int, b1: int) -> bool:
            return (b0 * plan.s - plan.span >= 0 and b1 * plan.s + plan.span <= t
                    and all(g < b0 * plan.s - plan.w
                            or (not plan.causal and g > b1 * plan.s - 1 + plan.w)
                            for g in self.glist))

        # c blocks per chunk, but one block per chunk where a chunk would not be plain: the
        # edge chunks build their own bias and padded copies, so they stay small.
        starts, ends, plain = [], [], []
        b0 = 0
        while b0 < plan.blocks:
            b1 = min(b0 + c, plan.blocks)
            ok = is_plain(b0, b1)
            if not ok and b1 > b0 + 1:
                b1 = b0 + 1
                ok = is_plain(b0, b1)
            starts.append(b0)
            ends.append(b1)
            plain.append(ok)
            b0 = b1
        if key_valid is not None:  # padding keys in the chunk's key range?
            cum = F.pad((~key_valid).cumsum(1), (1, 0))  # (B, T + 1)
            lo = torch.tensor([max(0, b0 * plan.s - plan.span) for b0 in starts], device=dev)
            hi = torch.tensor([min(t, b1 * plan.s + plan.span) for b1 in ends], device=dev)
            clean = ((cum[:, hi] - cum[:, lo]) == 0).tolist()
        else:
            clean = [[True] * len(starts)] * b
        self.chunks = [(bi, h0, min(h0 + hstep, h), b0, b1, plain[i] and clean[bi][i])
                       for bi in range(b) for h0 in range(0, h, hstep)
                       for i, (b0, b1) in enumerate(zip(starts, ends))]
        self.widest = max((h1 - h0) * (b1 - b0) for _, h0, h1, b0, b1, _ in self.chunks)

    def bias(self, bi, h0, h1, b0, b1, plain,
             out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(1 or h*c, s, L + G) additive score bias (0 where allowed, a huge negative elsewhere)
        and, for chunks that may have them, a (h*c, s, 1) 0/1 factor that zeroes the rows with
        no allowed key (padded queries far from any real key). A one-head edge chunk's bias is
        written into ``out`` (a scores buffer) when given: no separate bias tensor."""
        if plain:
            return self.static_bias, None
        p, dev = self.plan, self.static_bias.device
        blocks = torch.arange(b0, b1, device=dev)[:, None] * p.s
        kpos = blocks - p.span + torch.arange(p.L, device=dev)  # (c, L)
        key_ok = (kpos >= 0) & (kpos < p.t)
        if self.key_valid is not None:
            key_ok &= self.key_valid[bi][kpos.clamp(0, p.t - 1)]
        ok = self.band & key_ok[:, None, :]  # (c, s, L)
        if self.glist:
            qpos = (blocks + torch.arange(p.s, device=dev))[..., None]  # (c, s, 1)
            okg = p.global_allowed(qpos, self.gpos)  # (c, s, G)
            if self.key_valid is not None:
                okg &= self.key_valid[bi, self.gpos]
            ok = torch.cat([ok, okg], -1)
        zero, neg = self.static_bias.new_zeros(()), self.static_bias.new_full((), self.neg)
        if out is not None and h1 - h0 == 1:
            bias = torch.where(ok, zero, neg, out=out)  # (c, s, L + G)
        else:
            bias = torch.where(ok, zero, neg)
        live = ok.any(-1, keepdim=True).to(bias.dtype)  # (c, s, 1)
        if h1 - h0 > 1:  # chunk rows are head-major: (h*c, ...)
            bias, live = bias.repeat(h1 - h0, 1, 1), live.repeat(h1 - h0, 1, 1)
        return bias, live

    def rows(self, x: torch.Tensor, bi, h0, h1, b0, b1, plain) -> torch.Tensor:
        """(B, H, T, D) -> (h*c, s, D): the chunk's query rows (zero-padded past T)."""
        p = self.plan
        part = x[bi, h0:h1, b0 * p.s:min(b1 * p.s, p.t)]
        if not plain:
            part = F.pad(part, (0, 0, 0, (b1 - b0) * p.s - part.shape[1]))
        return part.reshape(-1, p.s, x.shape[-1])

    def global_rows_in(self, b0, b1) -> list[int]:
        """Offsets, within the chunk's rows, of the global queries it holds."""
        lo, hi = b0 * self.plan.s, b1 * self.plan.s
        return [g - lo for g in self.glist if lo <= g < hi]

    def tiles(self, x: torch.Tensor, bi, h0, h1, b0, b1, plain, out=None,
              name: str = "tiles") -> torch.Tensor:
        """(B, H, T, D) -> (h*c, L + G, D): each block's keys (or values), then the globals
        (written into ``out``, a :class:`_Workspace` buffer, when they must be copied)."""
        p = self.plan
        lo, hi = b0 * p.s - p.span, b1 * p.s + p.span
        part = x[bi, h0:h1, max(lo, 0):min(hi, p.t)]
        if not plain and b1 - b0 == 1 and out is not None:  # one edge block: zero-padded
            h, d, g = h1 - h0, x.shape[-1], len(self.glist)  # straight into the buffer
            dest = out.get(name, (h, p.L + g, d))
            dest[:, :max(0, -lo)].zero_()
            dest[:, max(0, -lo) + part.shape[1]:p.L].zero_()
            dest[:, max(0, -lo):max(0, -lo) + part.shape[1]] = part
            if g:
                dest[:, p.L:] = x[bi, h0:h1, self.gpos]
            return dest
        if not plain:
            part = F.pad(part, (0, 0, max(0, -lo), max(0, hi - p.t)))
        tiles = part.unfold(1, p.L, p.s).transpose(-1, -2)  # (h, c, L, D), a strided view
        h, c, _, d = tiles.shape
        if self.glist:
            glob = x[bi, h0:h1, self.gpos][:, None].expand(-1, c, -1, -1)  # (h, c, G, D)
            dest = None if out is None else out.get(name, (h, c, p.L + len(self.glist), d))
            tiles = torch.cat([tiles, glob], 2, out=dest)
        return tiles.reshape(h * c, -1, d)

    def fold(self, grad: torch.Tensor, out: torch.Tensor, bi, h0, h1, b0, b1, alpha) -> None:
        """Add (h*c, L + G, D) tile gradients, times ``alpha``, into ``out`` (B, H, T, D)."""
        p = self.plan
        h, c, d = h1 - h0, b1 - b0, grad.shape[-1]
        grad = grad.view(h, c, -1, d)
        lo, hi = b0 * p.s - p.span, b1 * p.s + p.span
        buf = grad.new_zeros(h, hi - lo, d)
        for part in range(p.L // p.s):  # tile b's part k holds the keys of block b - span/s + k
            buf[:, part * p.s:part * p.s + c * p.s].view(h, c, p.s, d).add_(
                grad[:, :, part * p.s:(part + 1) * p.s])
        out[bi, h0:h1, max(lo, 0):min(hi, p.t)].add_(
            buf[:, max(0, -lo):buf.shape[1] - max(0, hi - p.t)], alpha=alpha)
        if self.glist:
            out[bi, h0:h1].index_add_(1, self.gpos, grad[:, :, p.L:].sum(1), alpha=alpha)

    def bmm_rows(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, bi, h0, h1, b0, b1,
                 plain) -> None:
        """``out[chunk rows] = a @ b`` with (h*c, s, D) results; rows past T are dropped.
        A plain one-head chunk writes straight into ``out`` (contiguous (B, H, T, D))."""
        p = self.plan
        if plain and h1 - h0 == 1:
            torch.bmm(a, b, out=out[bi, h0, b0 * p.s:b1 * p.s].view(b1 - b0, p.s, -1))
            return
        n = min(b1 * p.s, p.t) - b0 * p.s
        res = torch.bmm(a, b)
        out[bi, h0:h1, b0 * p.s:b0 * p.s + n] = res.view(h1 - h0, -1, res.shape[-1])[:, :n]


def _keep_mask(shape, p: float, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Dropout multiplier (0 or 1/(1-p)), reproducible from ``seed`` for the backward pass."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    keep = torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype) >= p
    return keep.to(like.dtype).div_(1 - p)


def _softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, in place where the kernel allows it (CPU)."""
    if x.device.type == "cpu":
        return torch.ops.aten._softmax.out(x, -1, False, out=x)
    return torch.softmax(x, -1)


def _global_probs(q, k, gpos, key_valid, causal: bool, scale: float) -> torch.Tensor:
    """(B, H, G, T) probabilities of the global queries' full rows (zero rows if none allowed)."""
    scores = torch.matmul(q[:, :, gpos], k.transpose(-1, -2)).mul_(scale)  # (B, H, G, T)
    if key_valid is not None:
        scores.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
    if causal:
        scores.masked_fill_(torch.arange(k.shape[2], device=k.device) > gpos[:, None],
                            float("-inf"))
    return _softmax_(scores).nan_to_num_(0.0)  # in place: no second (B, H, G, T) tensor


class _BandAttention(torch.autograd.Function):
    """Sliding-window attention with global tokens, flash-style: the forward keeps no
    probabilities; the backward recomputes them chunk by chunk and accumulates the gradients in
    place, so the only full-size tensors are the inputs, the output and the gradients.

    Returns the output (B, H, T, D) and, when ``want_weights``, the band (B, H, T, 2w+1),
    global-column (B, H, T, G) and global-row (B, H, G, T) weights (else empty tensors).
    """

    @staticmethod
    def forward(ctx, q, k, v, plan: _Plan, key_valid, gpos, dropout: float, seed: int,
                want_weights: bool, budget: int):
        b, h, t, d = q.shape
        scale = 1.0 / math.sqrt(d)
        tiling = _Tiling(plan, q, key_valid, gpos, budget)
        n_glob = len(tiling.glist)
        wr = q.new_empty(b, h, 0, t)
        if n_glob:  # the global queries' full rows, done first so that their (B, H, G, T)
            # probabilities are freed before the chunk buffers exist (a lower peak)
            probs = _global_probs(q, k, gpos, key_valid, plan.causal, scale)  # (B, H, G, T)
            if want_weights:
                wr = probs.clone()
            if dropout:
                probs.mul_(_keep_mask(probs.shape, dropout, seed + len(tiling.chunks), probs))
            global_out = torch.matmul(probs, v)  # (B, H, G, D)
            del probs
        out = torch.empty(b, h, t, d, dtype=q.dtype, device=q.device)
        wb = q.new_zeros(b, h, t, 2 * plan.w + 1) if want_weights else q.new_empty(0)
        wg = q.new_zeros(b, h, t, n_glob) if want_weights else q.new_empty(0)
        work = _Workspace(q, tiling)
        for n, ch in enumerate(tiling.chunks):
            work.chunk(ch)
            scores = work.get("scores", ((ch[2] - ch[1]) * (ch[4] - ch[3]), plan.s,
                                         plan.L + n_glob))  # (h*c, s, L + G)
            bias, live = tiling.bias(*ch, out=None if want_weights else scores)
            qc = tiling.rows(q, *ch)  # (h*c, s, D)
            kt = tiling.tiles(k, *ch, out=work)  # (h*c, L + G, D)
            if bias is scores:  # an edge chunk's bias was written into the scores buffer
                probs = _softmax_(scores.baddbmm_(qc, kt.transpose(1, 2), alpha=scale))
            else:
                probs = _softmax_(torch.baddbmm(bias, qc, kt.transpose(1, 2), alpha=scale,
                                                out=scores))
            if live is not None:
                probs.mul_(live)
            if want_weights:
                _store_weights(wb, wg, probs.masked_fill(bias == tiling.neg, 0.0), plan, *ch)
            if dropout:
                probs.mul_(_keep_mask(probs.shape, dropout, seed + n, probs))
            tiling.bmm_rows(probs, tiling.tiles(v, *ch, out=work), out, *ch)
        del work
        if n_glob:  # the global queries' rows replace what the band computed for them
            out[:, :, gpos] = global_out
            if want_weights:
                wb[:, :, gpos] = 0
                wg[:, :, gpos] = 0
        ctx.save_for_backward(q, k, v, key_valid, gpos)
        ctx.plan, ctx.dropout, ctx.seed, ctx.budget = plan, dropout, seed, budget
        ctx.mark_non_differentiable(wb, wg, wr)
        return out, wb, wg, wr

    @staticmethod
    def backward(ctx, dout, *_weights_grads):
        q, k, v, key_valid, gpos = ctx.saved_tensors
        b, h, t, d = q.shape
        scale = 1.0 / math.sqrt(d)
        tiling = _Tiling(ctx.plan, q, key_valid, gpos, ctx.budget)
        work = _Workspace(q, tiling)
        dq, dk, dv = (torch.zeros(b, h, t, d, dtype=q.dtype, device=q.device) for _ in range(3))
        for n, ch in enumerate(tiling.chunks):
            work.chunk(ch)
            bias, live = tiling.bias(*ch)
            qc, do = tiling.rows(q, *ch), tiling.rows(dout, *ch)  # (h*c, s, D)
            glob_rows = tiling.global_rows_in(ch[3], ch[4])
            if glob_rows:  # their band output was replaced: no gradient through the band
                do = do.clone()
                do.view(ch[2] - ch[1], -1, d)[:, glob_rows] = 0
            kt = tiling.tiles(k, *ch, out=work, name="k")  # (h*c, L + G, D)
            vt = tiling.tiles(v, *ch, out=work, name="v")
            shape = (kt.shape[0], ctx.plan.s, kt.shape[1])  # (h*c, s, L + G)
            probs = _softmax_(torch.baddbmm(bias, qc, kt.transpose(1, 2), alpha=scale,
                                            out=work.get("probs", shape)))
            if live is not None:
                probs.mul_(live)
            dprobs = torch.bmm(do, vt.transpose(1, 2), out=work.get("dprobs", shape))
            tile_grad = work.get("tile_grad", kt.shape)
            if ctx.dropout:
                keep = _keep_mask(probs.shape, ctx.dropout, ctx.seed + n, probs)
                dprobs.mul_(keep)
                torch.bmm((probs * keep).transpose(1, 2), do, out=tile_grad)
            else:
                torch.bmm(probs.transpose(1, 2), do, out=tile_grad)
            tiling.fold(tile_grad, dv, *ch[:5], 1.0)
            dscores = torch.ops.aten._softmax_backward_data.out(
                dprobs, probs, -1, probs.dtype, grad_input=work.get("dscores", shape))
            tiling.bmm_rows(dscores, kt, dq, *ch)
            tiling.fold(torch.bmm(dscores.transpose(1, 2), qc, out=tile_grad), dk, *ch[:5], scale)
        if len(tiling.glist):
            g = len(tiling.glist)
            probs = _global_probs(q, k, gpos, key_valid, ctx.plan.causal, scale)  # (B, H, G, T)
            dog = dout[:, :, gpos]  # (B, H, G, D)
            dprobs = torch.matmul(dog, v.transpose(-1, -2))
            if ctx.dropout:
                keep = _keep_mask(probs.shape, ctx.dropout, ctx.seed + len(tiling.chunks), probs)
                dprobs.mul_(keep)
                kept = probs * keep
            else:
                kept = probs
            dv.view(b * h, t, d).baddbmm_(kept.reshape(b * h, g, t).transpose(1, 2),
                                         dog.reshape(b * h, g, d))
            dscores = torch._softmax_backward_data(dprobs, probs, -1, probs.dtype)
            dk.view(b * h, t, d).baddbmm_(dscores.reshape(b * h, g, t).transpose(1, 2),
                                         q[:, :, gpos].reshape(b * h, g, d), alpha=scale)
            dq[:, :, gpos] += torch.matmul(dscores, k)
        return dq.mul_(scale), dk, dv, None, None, None, None, None, None, None


def _store_weights(wb, wg, probs, plan: _Plan, bi, h0, h1, b0, b1, plain) -> None:
    """Copy (h*c, s, L + G) chunk probabilities into the band (B, H, T, 2w+1) and global-column
    (B, H, T, G) weights."""
    probs = probs.contiguous()
    n, s, cols = probs.shape
    # Row r of a tile holds key offset d at column r + span + d: a stride of cols + 1 per row.
    diag = probs.as_strided((n, s, 2 * plan.w + 1), (s * cols, cols + 1, 1),
                            probs.storage_offset() + plan.span - plan.w)
    rows = min(b1 * plan.s, plan.t) - b0 * plan.s
    at = slice(b0 * plan.s, b0 * plan.s + rows)
    wb[bi, h0:h1, at] = diag.reshape(h1 - h0, -1, diag.shape[-1])[:, :rows]
    if cols > plan.L:
        wg[bi, h0:h1, at] = probs[..., plan.L:].reshape(h1 - h0, -1, cols - plan.L)[:, :rows]


@register_attention("sliding_window")
class SlidingWindowAttention(AttentionBackend):
    capabilities = Capabilities(causal=True, cross_attention=False, returns_weights=True,
                                weights_form="band", complexity="O(T*window)")

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):
        t = q.shape[2]
        plan = _Plan.make(t, self.config.window, causal)
        gpos = torch.tensor([g for g in self.config.global_tokens if g < t], dtype=torch.long,
                            device=q.device)
        key_valid = None if key_padding_mask is None else ~key_padding_mask
        p = self.dropout_p  # fused: the kernel redraws each chunk's mask in the backward
        seed = int(torch.randint(0, 2**62, (1,))) if p else 0
        grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
        budget = _CHUNK_SCORES["training" if grad else "inference"]
        out, wb, wg, wr = _BandAttention.apply(q, k, v, plan, key_valid, gpos, p, seed,
                                               need_weights, budget)
        weights = SlidingWindowWeights(wb, plan.w, gpos, wg, wr) if need_weights else None
        return out, weights
