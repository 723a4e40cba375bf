"""Sequence-to-sequence: the LANISTR encoder + a causal decoder, and generation.

The decoder is a stack of :class:`DecoderLayer` (causal self-attention, cross-attention to the
encoder output, FFN; each wrapped in dropout, residual and LayerNorm exactly as the encoder's
layers: post-norm or pre-norm per ``config.norm``). It shares the encoder's embedding module
(tokens and positions), and its output head is tied to the token embeddings. Attention goes
through the same backend contract (``causal=True`` for self-attention); the decoder always uses
the dense ``full`` backend, whose bottom-right-aligned causal mask lets a block of new queries
attend a longer key cache.

Generation (:meth:`LanistrForSeq2Seq.generate`) is greedy or beam search, batched, with a
key/value cache (:class:`KVCache`): the self-attention keys/values of each new token are
written into preallocated buffers and the cross-attention keys/values of the encoder output are
computed once, so each new token costs O(T) instead of re-running the decoder on the prefix.
``use_cache=False`` re-runs the prefix and gives the same tokens.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import AttentionConfig, LanistrConfig
from lanistr.errors import ConfigError, LanistrError
from lanistr.nn.dropout import Dropout
from lanistr.nn.embeddings import Embeddings
from lanistr.nn.heads import MLMHead
from lanistr.nn.layers import FeedForward, MultiHeadAttention
from lanistr.nn.models import LanistrModel, PreTrainedModel, register_architecture

# --------------------------------------------------------------------------------------------
# outputs, generation settings, cache


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor  # (B, T, V), or (M, V) at ``logit_positions``
    encoder_last_hidden_state: torch.Tensor  # (B, S, D)
    decoder_last_hidden_state: torch.Tensor  # (B, T, D)
    self_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, H, T, T)
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, H, T, S)


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # (B, L) generated ids (no BOS), EOS included, padded after it
    scores: torch.Tensor  # (B,) sum of log-probabilities (beam: divided by length ** penalty)


@dataclass
class GenerationConfig:
    """How to generate; saved as ``generation_config.json`` beside a seq2seq checkpoint."""

    bos_token_id: int
    eos_token_id: int
    pad_token_id: int = 0
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    use_cache: bool = True
    max_source_len: int = 128
    target_format: str = "markup"  # how the task turns ids into text: markup | plain

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams={self.num_beams} must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(f"min_new_tokens={self.min_new_tokens} must be in "
                              f"[0, max_new_tokens={self.max_new_tokens}]")
        if self.target_format not in ("markup", "plain"):
            raise ConfigError(f"target_format={self.target_format!r} must be markup or plain")

    @classmethod
    def for_tokenizer(cls, tokenizer, **fields) -> GenerationConfig:
        """[CLS] starts a target, [SEP] ends it."""
        return cls(bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id,
                   pad_token_id=tokenizer.pad_id, **fields)

    def replace(self, **changes) -> GenerationConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class DecodingContext:
    """What decoding reads from the source: per-layer cross-attention keys/values, the source
    padding mask, the source ids, and (copy models) the copy-attention keys."""

    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (B, H, S, Dh) each
    padding: torch.Tensor | None  # (B, S) True at padding
    source_ids: torch.Tensor  # (B, S)
    copy_keys: torch.Tensor | None = None  # (B, S, D)


class KVCache:
    """Decoder keys/values for incremental decoding.

    ``keys``/``values`` are preallocated ``(L, B, H, T_max, Dh)`` buffers filled up to
    ``length``; ``cross[l]`` holds the cross-attention keys/values of the encoder output for
    layer ``l``, ``(B, H, S, Dh)`` each, computed once.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor,
                 cross: list[tuple[torch.Tensor, torch.Tensor]],
                 memory_padding: torch.Tensor | None):
        self.keys, self.values = keys, values
        self.cross = cross
        self.memory_padding = memory_padding
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new (B, H, t, Dh) keys/values after ``length``; return all so far."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise LanistrError(f"KV cache holds {self.capacity} positions; {end} requested")
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, t: int) -> None:
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (beam search). The cross keys/values are equal for every beam
        of one example and beams never move between examples, so they stay as they are."""
        n = self.length
        self.keys[:, :, :, :n] = self.keys[:, index, :, :n]
        self.values[:, :, :, :n] = self.values[:, index, :, :n]


# --------------------------------------------------------------------------------------------
# the decoder


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, FFN; post-norm or pre-norm residual blocks."""

    def __init__(self, config: LanistrConfig, layer_idx: int = 0):
        super().__init__()
        d = config.hidden_size
        self.self_attention = MultiHeadAttention(config, layer_idx)
        self.self_attention_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.cross_attention = MultiHeadAttention(config, layer_idx, cross=True)
        self.cross_attention_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)
        self.pre_norm = config.norm == "pre"
        self.layer_idx = layer_idx

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) encoder output -> keys, values (B, H, S, Dh)."""
        attn = self.cross_attention
        k, v = attn.split_heads(attn.kv(memory), 2)
        return k, v

    def forward(self, x: torch.Tensor, cross_kv, memory_padding, cache: KVCache | None = None,
                need_weights: bool = False):
        """(B, T, D) -> (B, T, D), self-attention weights, cross-attention weights."""
        x, w_self = self._residual(x, self.self_attention_norm,
                                   lambda h: self._self_attend(h, cache, need_weights))
        x, w_cross = self._residual(x, self.cross_attention_norm,
                                    lambda h: self._cross_attend(h, cross_kv, memory_padding,
                                                                 need_weights))
        x, _ = self._residual(x, self.ffn_norm, lambda h: (self.ffn(h), None))
        return x, w_self, w_cross

    def _residual(self, x, norm, block):
        if self.pre_norm:
            h, weights = block(norm(x))
            return x + self.dropout(h), weights
        h, weights = block(x)
        return norm(x + self.dropout(h)), weights

    def _self_attend(self, h, cache: KVCache | None, need_weights: bool):
        attn = self.self_attention
        q, k, v = attn.split_heads(attn.qkv(h), 3)  # (B, H, t, Dh) each
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, H, past + t, Dh)
        out, weights = attn.attend(q, k, v, causal=True, need_weights=need_weights)
        return attn.out(out), weights

    def _cross_attend(self, h, cross_kv, memory_padding, need_weights: bool):
        attn = self.cross_attention
        (q,) = attn.split_heads(attn.query(h), 1)  # (B, H, t, Dh)
        k, v = cross_kv
        out, weights = attn.attend(q, k, v, key_padding_mask=memory_padding,
                                   need_weights=need_weights, cross=True)
        return attn.out(out), weights


class Decoder(nn.Module):
    """Shared embeddings (positions continue after the cache) -> decoder layers (-> final
    LayerNorm for pre-norm). The decoder's attention is always the dense ``full`` backend."""

    def __init__(self, config: LanistrConfig, embeddings: Embeddings):
        super().__init__()
        config = dataclasses.replace(config, attention=AttentionConfig("full"))
        n = config.decoder_layers or config.num_layers
        self.embeddings = [embeddings]  # a list: shared with the encoder, not registered twice
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(n))
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.norm == "pre" else None)
        self.max_len = config.max_len

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_kv(memory) for layer in self.layers]

    def forward(self, input_ids: torch.Tensor, cross_kv, memory_padding,
                cache: KVCache | None = None, need_weights: bool = False):
        """(B, t) ids -> (B, t, D) states (+ per-layer attention weights if asked)."""
        past = cache.length if cache is not None else 0
        t = input_ids.shape[1]
        if past + t > self.max_len:
            raise LanistrError(f"the decoder allows max_len={self.max_len} positions; "
                               f"{past + t} requested (lower max_new_tokens)")
        positions = torch.arange(past, past + t, device=input_ids.device)
        x = self.embeddings[0](input_ids, position_ids=positions)  # (B, t, D)
        self_w, cross_w = [], []
        for layer, kv in zip(self.layers, cross_kv):
            x, ws, wc = layer(x, kv, memory_padding, cache, need_weights)
            self_w.append(ws)
            cross_w.append(wc)
        if cache is not None:
            cache.advance(t)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, (tuple(self_w), tuple(cross_w)) if need_weights else (None, None)


# --------------------------------------------------------------------------------------------
# the model


@register_architecture
class LanistrForSeq2Seq(PreTrainedModel):
    """Encoder + causal decoder + output head tied to the shared token embeddings.

    ``config.decoder_layers`` sets the depth of the decoder (0: as deep as the encoder); its
    width, heads, FFN, activation and norm placement are the encoder's. Build one from any
    encoder checkpoint with :meth:`from_encoder`.
    """

    head_prefixes = ("decoder.", "lm_head.", "model.pooler.")

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.model = LanistrModel(config)
        self.decoder = Decoder(config, self.model.encoder.embeddings)
        self.lm_head = MLMHead(config, self.model.token_embedding)
        self.post_init()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_encoder(cls, directory: str | Path, *, decoder_layers: int | None = None,
                     vocab_size: int | None = None, decoder_init: str = "encoder",
                     **config_overrides) -> LanistrForSeq2Seq:
        """A seq2seq model whose encoder and embeddings come from a lanistr checkpoint (any
        architecture, including converted Hugging Face BERT). The output head starts from the
        checkpoint's MLM head when it has one. ``vocab_size`` larger than the checkpoint's adds
        freshly initialised embedding rows (e.g. for marker tokens).

        ``decoder_init="encoder"`` warm-starts decoder layer ``i`` from encoder layer ``i``
        (BERT2BERT, Rothe et al. 2020): self-attention, FFN and their LayerNorms are copied,
        and the cross-attention starts as a copy of the same layer's self-attention;
        ``"random"`` leaves the decoder freshly initialised."""
        from lanistr.checkpoint import load_seq2seq_from_encoder

        return load_seq2seq_from_encoder(cls, directory, decoder_layers=decoder_layers,
                                         vocab_size=vocab_size, decoder_init=decoder_init,
                                         **config_overrides)

    @classmethod
    def from_encoder_state(cls, config: LanistrConfig, state: dict[str, torch.Tensor], *,
                           decoder_layers: int | None = None, vocab_size: int | None = None,
                           decoder_init: str = "encoder"):
        """The model of :meth:`from_encoder`, from an encoder's config and state dict: returns
        ``(model, state)`` with ``state`` renamed, grown and warm-started for this model
        (copy it in with ``lanistr.checkpoint.load_state``)."""
        old_vocab = config.vocab_size
        changes = {"architecture": cls.__name__, "labels": []}
        if decoder_layers is not None:
            changes["decoder_layers"] = decoder_layers
        if vocab_size is not None:
            if vocab_size < old_vocab:
                raise ConfigError(f"vocab_size={vocab_size} is smaller than the checkpoint's "
                                  f"({old_vocab})")
            changes["vocab_size"] = vocab_size
        config = dataclasses.replace(config, **changes)
        if not config.decoder_layers:
            config.decoder_layers = config.num_layers
        model = cls(config)
        state = {("lm_head." + k[len("mlm_head."):] if k.startswith("mlm_head.") else k): v
                 for k, v in state.items()}
        state = _grow_vocab(state, model, old_vocab)
        if decoder_init == "encoder":
            state = _warm_start_decoder(state, model)
        elif decoder_init != "random":
            raise ConfigError(f"decoder_init={decoder_init!r} must be encoder or random")
        return model, state

    # -- forward -------------------------------------------------------------------------------

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Encoder output (B, S, D) and its key padding mask ((B, S), True at padding, or None)."""
        memory = self.model(input_ids, attention_mask).last_hidden_state
        padding = None
        if attention_mask is not None and not bool(attention_mask.all()):
            padding = ~attention_mask.bool()
        return memory, padding

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                decoder_input_ids: torch.Tensor, *, logit_positions: torch.Tensor | None = None,
                output_attentions: bool = False) -> Seq2SeqOutput:
        """Teacher-forced pass. ``logit_positions`` (bool (B, T)) computes vocabulary logits
        only there (``logits`` is then ``(M, V)`` in row-major order)."""
        memory, padding = self.encode(input_ids, attention_mask)
        ctx = self.context(input_ids, memory, padding)
        h, (self_w, cross_w) = self.decoder(decoder_input_ids, ctx.cross_kv, padding,
                                            need_weights=output_attentions)
        logits = self.head(h, ctx, logit_positions)
        return Seq2SeqOutput(logits, memory, h, self_w, cross_w)

    def context(self, input_ids: torch.Tensor, memory: torch.Tensor,
                padding: torch.Tensor | None) -> DecodingContext:
        """What every decoding step reads from the source (computed once per batch)."""
        return DecodingContext(self.decoder.cross_kv(memory), padding, input_ids)

    def head(self, h: torch.Tensor, ctx: DecodingContext,
             positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) decoder states -> (B, T, V) logits, or (M, V) at ``positions``."""
        return self.lm_head(h[positions] if positions is not None else h)

    # -- generation ----------------------------------------------------------------------------

    def new_cache(self, ctx: DecodingContext, capacity: int) -> KVCache:
        cfg = self.config
        layers = len(self.decoder.layers)
        k = ctx.cross_kv[0][0]  # (B, H, S, Dh)
        shape = (layers, k.shape[0], cfg.num_heads, capacity, cfg.head_dim)
        return KVCache(k.new_zeros(shape), k.new_zeros(shape), ctx.cross_kv, ctx.padding)

    def _next_logits(self, tokens: torch.Tensor, ctx: DecodingContext,
                     cache: KVCache | None) -> torch.Tensor:
        """Logits (B, V) of the next token after the prefix ``tokens`` (B, t)."""
        if cache is not None:
            h, _ = self.decoder(tokens[:, cache.length:], ctx.cross_kv, ctx.padding, cache)
        else:
            h, _ = self.decoder(tokens, ctx.cross_kv, ctx.padding)
        return self.head(h[:, -1:], ctx)[:, 0].float()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 generation: GenerationConfig) -> GenerationOutput:
        """Greedy (``num_beams=1``) or beam search for a batch of sources."""
        if generation.max_new_tokens + 1 > self.config.max_len:
            raise ConfigError(f"max_new_tokens={generation.max_new_tokens} does not fit the "
                              f"decoder's max_len={self.config.max_len} positions ([CLS] "
                              "takes one)")
        was_training = self.training
        self.eval()
        try:
            memory, padding = self.encode(input_ids, attention_mask)
            k = generation.num_beams
            if k > 1:  # every beam of an example reads the same source
                memory, input_ids = (memory.repeat_interleave(k, dim=0),
                                     input_ids.repeat_interleave(k, dim=0))  # (B*K, S, ...)
                padding = padding.repeat_interleave(k, dim=0) if padding is not None else None
            ctx = self.context(input_ids, memory, padding)
            if k == 1:
                return self._greedy(ctx, generation)
            return self._beam_search(ctx, generation)
        finally:
            self.train(was_training)

    def _start(self, ctx: DecodingContext, gen: GenerationConfig):
        rows = ctx.source_ids.shape[0]
        tokens = torch.full((rows, 1), gen.bos_token_id, dtype=torch.long,
                            device=ctx.source_ids.device)
        cache = self.new_cache(ctx, gen.max_new_tokens + 1) if gen.use_cache else None
        return tokens, cache

    def _log_probs(self, tokens, ctx, cache, step, gen):
        logp = F.log_softmax(self._next_logits(tokens, ctx, cache), dim=-1)
        if step < gen.min_new_tokens:
            logp[:, gen.eos_token_id] = -math.inf
        return logp

    def _greedy(self, ctx: DecodingContext, gen: GenerationConfig) -> GenerationOutput:
        tokens, cache = self._start(ctx, gen)
        b, device = tokens.shape[0], tokens.device
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        scores = torch.zeros(b, device=device)
        for step in range(gen.max_new_tokens):
            logp = self._log_probs(tokens, ctx, cache, step, gen)  # (B, V)
            best = logp.argmax(-1)
            scores += torch.where(finished, 0.0, logp.gather(1, best[:, None])[:, 0])
            best = torch.where(finished, gen.pad_token_id, best)
            tokens = torch.cat([tokens, best[:, None]], dim=1)
            finished |= best == gen.eos_token_id
            if bool(finished.all()):
                break
        return GenerationOutput(tokens[:, 1:], scores)

    def _beam_search(self, ctx: DecodingContext, gen: GenerationConfig) -> GenerationOutput:
        """Beam search with ``early_stopping``: an example is done once it has ``num_beams``
        finished hypotheses. A hypothesis scores ``sum log p / length ** length_penalty``
        (length counts generated tokens, EOS included). With one beam this is greedy search.
        ``ctx`` holds ``num_beams`` copies of each example's source, consecutively."""
        tokens, cache = self._start(ctx, gen)
        k = gen.num_beams
        b, device = tokens.shape[0] // k, tokens.device
        beam_scores = torch.zeros(b, k, device=device)
        beam_scores[:, 1:] = -math.inf  # all beams start equal: expand only the first
        hyps: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        done = [False] * b
        for step in range(gen.max_new_tokens):
            logp = self._log_probs(tokens, ctx, cache, step, gen)  # (B*K, V)
            vocab = logp.shape[-1]
            cand = (beam_scores.reshape(-1, 1) + logp).reshape(b, k * vocab)
            top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (B, 2K)
            top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
            next_scores = torch.full((b, k), -math.inf, device=device)
            next_tokens = torch.full((b, k), gen.pad_token_id, dtype=torch.long, device=device)
            origin = torch.arange(b * k, device=device).reshape(b, k)
            prefix = tokens[:, 1:].tolist()
            for i in range(b):
                if done[i]:
                    continue
                filled = 0
                for rank, (score, idx) in enumerate(zip(top_scores[i], top_idx[i])):
                    beam, token = divmod(idx, vocab)
                    if token == gen.eos_token_id:
                        if rank < k:  # only an EOS among the k best candidates ends a beam
                            seq = prefix[i * k + beam] + [token]
                            hyps[i].append((score / len(seq) ** gen.length_penalty, seq))
                        continue
                    next_scores[i, filled] = score
                    next_tokens[i, filled] = token
                    origin[i, filled] = i * k + beam
                    filled += 1
                    if filled == k:
                        break
                done[i] = len(hyps[i]) >= k
            if all(done):
                break
            index = origin.reshape(-1)
            tokens = torch.cat([tokens[index], next_tokens.reshape(-1, 1)], dim=1)
            if cache is not None:
                cache.reorder(index)
            beam_scores = next_scores
        else:  # out of tokens: the running beams are hypotheses too
            prefix = tokens[:, 1:].tolist()
            scores = beam_scores.tolist()
            for i in range(b):
                if done[i]:
                    continue
                for j in range(k):
                    if scores[i][j] > -math.inf:
                        seq = prefix[i * k + j]
                        hyps[i].append((scores[i][j] / len(seq) ** gen.length_penalty, seq))
        best = [max(h, key=lambda x: x[0]) for h in hyps]
        width = max(len(seq) for _, seq in best)
        out = torch.full((b, width), gen.pad_token_id, dtype=torch.long, device=device)
        for i, (_, seq) in enumerate(best):
            out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long, device=device)
        return GenerationOutput(out, torch.tensor([s for s, _ in best], device=device))


@register_architecture
class LanistrForSeq2SeqCopy(LanistrForSeq2Seq):
    """:class:`LanistrForSeq2Seq` with a copy mechanism (pointer-generator, See et al. 2017).

    A single-head copy attention over the encoder output gives a distribution ``a`` over the
    source positions; a gate ``g = sigmoid(w . h)`` mixes the vocabulary distribution with it::

        p(w) = g * softmax(logits)(w) + (1 - g) * sum(a_s for source positions s holding w)

    Copying the source's ``[SEP]`` ends the output. ``logits`` are then the log of ``p``
    (normalised log-probabilities, so cross-entropy and generation use them unchanged). Suited
    to tasks whose outputs mostly repeat the input (restoration, correction, extraction).
    """

    head_prefixes = (*LanistrForSeq2Seq.head_prefixes, "copy_")

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        d = config.hidden_size
        self.copy_query = nn.Linear(d, d)
        self.copy_key = nn.Linear(d, d)
        self.copy_gate = nn.Linear(d, 1)
        self.post_init()

    def context(self, input_ids, memory, padding) -> DecodingContext:
        ctx = super().context(input_ids, memory, padding)
        ctx.copy_keys = self.copy_key(memory)  # (B, S, D)
        return ctx

    def head(self, h, ctx, positions=None) -> torch.Tensor:
        b, t, d = h.shape
        scores = torch.matmul(self.copy_query(h), ctx.copy_keys.transpose(1, 2)) / math.sqrt(d)
        if ctx.padding is not None:  # (B, T, S)
            scores = scores.masked_fill(ctx.padding[:, None, :], -math.inf)
        attn = torch.softmax(scores.float(), dim=-1)
        gate = torch.sigmoid(self.copy_gate(h).float())  # (B, T, 1)
        source = ctx.source_ids[:, None, :].expand(b, t, -1)  # (B, T, S)
        if positions is not None:
            h, attn, gate, source = h[positions], attn[positions], gate[positions], source[positions]
        p = gate * torch.softmax(self.lm_head(h).float(), dim=-1)  # (..., V)
        p = p.scatter_add(-1, source, (1.0 - gate) * attn)
        return torch.log(p.clamp_min(1e-30))


def _grow_vocab(state: dict[str, torch.Tensor], model: LanistrForSeq2Seq,
                old_vocab: int) -> dict[str, torch.Tensor]:
    """Pad the token embedding rows and the output bias of an encoder checkpoint to the model's
    vocabulary, with the model's fresh initialisation for the new rows."""
    new_vocab = model.config.vocab_size
    if new_vocab == old_vocab:
        return state
    fresh = model.state_dict()
    out = dict(state)
    for name, tensor in state.items():
        target = name if name in fresh else f"model.{name}"
        if (name.endswith("embeddings.token.weight") or name == "lm_head.bias") and \
                target in fresh and tensor.shape[0] == old_vocab:
            out[name] = torch.cat([tensor, fresh[target][old_vocab:].to(tensor.dtype)], dim=0)
    return out


def _warm_start_decoder(state: dict[str, torch.Tensor],
                        model: LanistrForSeq2Seq) -> dict[str, torch.Tensor]:
    """Decoder layer i's tensors from encoder layer i (as many as both stacks have)."""
    prefix = "model." if any(k.startswith("model.encoder.") for k in state) else ""
    d = model.config.hidden_size
    out = dict(state)
    n = min(len(model.decoder.layers), model.config.num_layers)
    for i in range(n):
        enc, dec = f"{prefix}encoder.layers.{i}.", f"decoder.layers.{i}."
        if f"{enc}attention.qkv.weight" not in state:
            break
        for kind in ("weight", "bias"):
            qkv = state[f"{enc}attention.qkv.{kind}"]
            copies = {
                f"self_attention.qkv.{kind}": qkv,
                f"self_attention.out.{kind}": state[f"{enc}attention.out.{kind}"],
                f"self_attention_norm.{kind}": state[f"{enc}attention_norm.{kind}"],
                f"cross_attention.query.{kind}": qkv[:d],
                f"cross_attention.kv.{kind}": qkv[d:],
                f"cross_attention.out.{kind}": state[f"{enc}attention.out.{kind}"],
                f"cross_attention_norm.{kind}": state[f"{enc}attention_norm.{kind}"],
                f"ffn.fc1.{kind}": state[f"{enc}ffn.fc1.{kind}"],
                f"ffn.fc2.{kind}": state[f"{enc}ffn.fc2.{kind}"],
                f"ffn_norm.{kind}": state[f"{enc}ffn_norm.{kind}"],
            }
            out.update({dec + name: t.clone() for name, t in copies.items()})
    for kind in ("weight", "bias"):
        if model.decoder.final_norm is not None and f"{prefix}encoder.final_norm.{kind}" in state:
            out[f"decoder.final_norm.{kind}"] = state[f"{prefix}encoder.final_norm.{kind}"].clone()
    return out


def decode_until_eos(sequences: torch.Tensor, eos_token_id: int) -> list[list[int]]:
    """Each generated row up to (not including) its first EOS."""
    out = []
    for row in sequences.tolist():
        out.append(row[:row.index(eos_token_id)] if eos_token_id in row else row)
    return out
