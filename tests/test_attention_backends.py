"""Attention backends: the contract, tested over the whole registry, and each backend's exact
degenerate case (sliding window / LSH / Linformer reduce to full attention)."""

import math
import warnings

import pytest
import torch
from tests.conftest import padded_batch

from lanistr.config import AttentionConfig, LanistrConfig, from_dict
from lanistr.errors import ConfigError
from lanistr.nn.attention import (
    AttentionCapabilityError,
    SparseAttentionWeights,
    get_backend,
    list_backends,
    sliding_window,
)
from lanistr.nn.attention.lsh import LSHAttention
from lanistr.nn.attention.sliding_window import _BandAttention, _Plan

B, H, D, MAX_LEN = 2, 2, 8, 32
# Small parameters so that each backend runs its real sparse path on a 13-token sequence.
SMALL = {
    "sliding_window": {"window": 2, "global_tokens": [0, 6]},
    "linformer": {"k": 5},
    "lsh": {"bucket_size": 4},
}
BACKENDS = [spec.name for spec in list_backends()]


def make(name: str, dropout: float = 0.0, layer_idx: int = 0, **params):
    spec = get_backend(name)
    config = from_dict(spec.config_cls, {**SMALL.get(name, {}), **params}, "attention")
    return spec.cls(config, max_len=MAX_LEN, dropout=dropout,
                    layer_idx=layer_idx).double()


def qkv(t: int = 13, b: int = B, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, H, t, D, generator=g, dtype=torch.float64,
                        requires_grad=requires_grad) for _ in range(3)]


def padding(t: int = 13, lengths=(13, 9)) -> torch.Tensor:
    """(B, T) True at padding."""
    return torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]


def dense(weights) -> torch.Tensor:
    return weights.densify() if isinstance(weights, SparseAttentionWeights) else weights


def reference(q, k, v, allowed):
    """Softmax attention restricted to ``allowed`` (Tq, Tk) or (B, 1, Tq, Tk); empty rows -> 0."""
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~allowed, -math.inf)
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    return probs @ v, probs


# --------------------------------------------------------------------------------------------
# the contract, for every registered backend


@pytest.mark.parametrize("name", BACKENDS)
def test_output_is_linear_in_values_and_each_sequence_and_head_is_independent(name):
    """No weights unless asked; the weights depend on q/k only (the output is linear in v);
    a sequence, and a head, computed alone give the same output as in the batch."""
    backend = make(name)
    q, k, v = qkv()
    _, _, v2 = qkv(seed=1)
    mask = padding()
    out, weights = backend(q, k, v, key_padding_mask=mask)
    assert out.shape == q.shape and weights is None
    mixed = backend(q, k, 2 * v - 3 * v2, key_padding_mask=mask)[0]
    torch.testing.assert_close(mixed, 2 * out - 3 * backend(q, k, v2, key_padding_mask=mask)[0])
    for i in range(B):
        for h in range(H):
            alone = backend(*(x[i:i + 1, h:h + 1] for x in (q, k, v)),
                            key_padding_mask=mask[i:i + 1])[0]
            if name == "lsh":  # each head hashes with its own rotations: compare the batch only
                break
            torch.testing.assert_close(alone[0, 0], out[i, h])
        row = backend(*(x[i:i + 1] for x in (q, k, v)), key_padding_mask=mask[i:i + 1])[0]
        torch.testing.assert_close(row[0], out[i])


@pytest.mark.parametrize("name", BACKENDS)
def test_padding_does_not_change_real_outputs(name):
    backend = make(name)  # every backend honours padding: the contract, not a capability
    q, k, v = qkv()
    mask = padding()
    out = backend(q, k, v, key_padding_mask=mask)[0]
    real = ~mask
    # Other values at the padded positions...
    q2, k2, v2 = (torch.where(mask[:, None, :, None], torch.randn_like(x) * 5, x)
                  for x in (q, k, v))
    out2 = backend(q2, k2, v2, key_padding_mask=mask)[0]
    torch.testing.assert_close(out2.transpose(1, 2)[real], out.transpose(1, 2)[real])
    # ...and more padding: the real tokens' outputs do not move.
    q3, k3, v3 = (torch.cat([x, torch.randn(B, H, 6, D, dtype=x.dtype)], 2) for x in (q, k, v))
    mask3 = torch.cat([mask, torch.ones(B, 6, dtype=torch.bool)], 1)
    out3 = backend(q3, k3, v3, key_padding_mask=mask3)[0][:, :, :13]
    torch.testing.assert_close(out3.transpose(1, 2)[real], out.transpose(1, 2)[real])


@pytest.mark.parametrize("name", BACKENDS)
def test_gradients_reach_inputs_and_parameters(name):
    backend = make(name)
    q, k, v = qkv(requires_grad=True)
    out = backend(q, k, v, key_padding_mask=padding())[0]
    (out * torch.randn_like(out)).sum().backward()
    shared_qk = backend.capabilities.shared_qk
    for tensor, label in ((q, "q"), (k, "k"), (v, "v")):
        if label == "k" and shared_qk:  # keys are derived from q: k is documented as unused
            assert tensor.grad is None
            torch.testing.assert_close(backend(q, None, v, key_padding_mask=padding())[0], out,
                                       rtol=0, atol=0)  # and may be None
            continue
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0, label
    for pname, param in backend.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("padded", [False, True])
def test_weights_reproduce_the_output_and_rows_sum_to_one(name, padded):
    backend = make(name)
    q, k, v = qkv()
    mask = padding() if padded else None
    plain = backend(q, k, v, key_padding_mask=mask)[0]
    out, weights = backend(q, k, v, key_padding_mask=mask, need_weights=True)
    torch.testing.assert_close(out, plain)  # asking for weights does not change the maths
    w = dense(weights)
    assert w.shape == (B, H, 13, 13)
    torch.testing.assert_close(w @ v, out)  # the weights are what mixes the values
    real = torch.ones(B, 13, dtype=torch.bool) if mask is None else ~mask
    if backend.capabilities.weights_form == "lowrank":  # probabilities over projected rows
        torch.testing.assert_close(weights.probs.sum(-1), torch.ones_like(weights.probs[..., 0]))
        return
    rows = w.sum(-1).transpose(1, 2)[real]  # real query rows
    torch.testing.assert_close(rows, torch.ones_like(rows))
    if mask is not None:
        assert torch.all(w.transpose(1, 3)[mask] == 0)  # padded keys get nothing


@pytest.mark.parametrize("name", BACKENDS)
def test_capabilities_are_enforced(name):
    backend = make(name)
    caps = backend.capabilities
    q, k, v = qkv()
    if not caps.causal:
        with pytest.raises(AttentionCapabilityError, match=name):
            backend(q, k, v, causal=True)
    if not caps.cross_attention:
        # The flag decides, not the lengths: equal lengths are still refused...
        with pytest.raises(AttentionCapabilityError, match="cross-attention"):
            backend(q, k, v, cross=True)
        # ...and self-attention with fewer queries than keys is refused too.
        with pytest.raises(AttentionCapabilityError, match="attends a sequence to itself"):
            backend(q[:, :, :5], k, v)
    else:
        # Cross-attention from 5 queries to the 13 keys: the rows of the self-attention output
        # (a query's output depends on the keys/values, not on the other queries).
        torch.testing.assert_close(backend(q[:, :, :5], k, v, cross=True)[0],
                                   backend(q, k, v)[0][:, :, :5])
    if not caps.shared_qk:
        with pytest.raises(AttentionCapabilityError, match="needs keys"):
            backend(q, None, v)


@pytest.mark.parametrize("name", [n for n in BACKENDS if get_backend(n).capabilities.causal])
def test_causal_output_ignores_the_future(name):
    backend = make(name)
    q, k, v = qkv()
    out = backend(q, k, v, causal=True)[0]
    future = torch.arange(13)[None, None, :, None] > 6
    q2, k2, v2 = (torch.where(future, torch.randn_like(x), x) for x in (q, k, v))
    out2 = backend(q2, k2, v2, causal=True)[0]
    torch.testing.assert_close(out2[:, :, :7], out[:, :, :7])


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_config_rejects_unknown_keys(name):
    with pytest.raises(ConfigError, match="unknown key attention.bogus"):
        AttentionConfig.from_dict({"backend": name, "bogus": 1})


# --------------------------------------------------------------------------------------------
# sliding window


def window_mask(t: int, w: int, globals_=(), causal=False) -> torch.Tensor:
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = (i - j).abs() <= w
    for g in globals_:
        if g < t:
            allowed[g, :] = True
            allowed[:, g] = True
    return allowed & (j <= i) if causal else allowed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("globals_", [[], [0, 3]])
def test_sliding_window_wider_than_the_sequence_is_full_attention(causal, globals_):
    q, k, v = qkv()
    mask = padding()
    full = make("full")(q, k, v, key_padding_mask=mask, causal=causal)[0]
    for window in (12, 1000):
        sw = make("sliding_window", window=window, global_tokens=globals_)
        torch.testing.assert_close(sw(q, k, v, key_padding_mask=mask, causal=causal)[0], full)


@pytest.mark.parametrize(("t", "window", "globals_", "chunk"), [
    (1, 3, [0], "default"), (37, 0, [], "default"), (37, 3, [0, 20, 99], "default"),
    (130, 5, [], "default"), (130, 40, [64, 129], "default"), (200, 70, [0], "default"),
    (100, 5, [99], "one_block"), (100, 3, [], "one_block"),
])
@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_matches_a_dense_banded_reference(t, window, globals_, chunk, causal,
                                                         monkeypatch):
    """Blocked computation == softmax over a T x T band mask, outputs and gradients; odd
    lengths, padding, global tokens inside and outside the band. ``one_block`` chunks make
    most chunks interior ("plain": strided views, static bias); q/k/v are non-contiguous views
    as the encoder layer passes them."""
    if chunk == "one_block":
        monkeypatch.setattr(sliding_window, "_CHUNK_SCORES", {"inference": 1, "training": 1})
    fused = torch.randn(B, t, 3, H, D, dtype=torch.float64, requires_grad=True)
    q, k, v = fused.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, D) views
    mask = padding(t, (t, max(1, t - t // 3)))
    sw = make("sliding_window", window=window, global_tokens=globals_)
    out, weights = sw(q, k, v, key_padding_mask=mask, causal=causal, need_weights=True)
    allowed = window_mask(t, window, globals_, causal)[None, None] & ~mask[:, None, None, :]
    ref, probs = reference(q, k, v, allowed)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(weights.densify(), probs.detach())
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), fused)
    (ref_grad,) = torch.autograd.grad((ref * g).sum(), fused)
    torch.testing.assert_close(grad, ref_grad)


def test_sliding_window_band_form_holds_each_weight_once():
    q, k, v = qkv(t=20)
    w = make("sliding_window", window=3, global_tokens=[0, 9])(q, k, v, need_weights=True)[1]
    assert w.band.shape == (B, H, 20, 7) and w.window == 3
    assert w.global_columns.shape == (B, H, 20, 2) and w.global_rows.shape == (B, H, 2, 20)
    assert w.global_positions.tolist() == [0, 9]
    assert torch.all(w.band[:, :, 0, :3] == 0)  # keys before position 0
    assert torch.all(w.global_columns[:, :, 6:13, 1] == 0)  # key 9 is in these rows' band
    assert torch.all(w.global_columns[:, :, 13:, 1] > 0) and torch.all(w.global_columns[:, :, 1:6, 1] > 0)
    assert torch.all(w.band[:, :, [0, 9]] == 0)  # global rows live in global_rows
    torch.testing.assert_close(w.global_rows.sum(-1), torch.ones(B, H, 2, dtype=q.dtype))


def test_sliding_window_backward_passes_gradcheck_with_dropout():
    """The hand-written backward, with a fixed dropout seed so that the function is fixed."""
    q, k, v = (x[:, :1, :, :3].detach().requires_grad_() for x in qkv(t=11, b=1))
    mask = padding(11, (9,))
    gpos = torch.tensor([0, 4])
    for causal in (False, True):
        plan = _Plan.make(11, 2, causal)

        def fn(q, k, v, plan=plan):
            return _BandAttention.apply(q, k, v, plan, ~mask, gpos, 0.3, 1234, False, 64)[0]

        assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-5, fast_mode=True)


def test_sliding_window_dropout_is_reproducible_and_only_in_training():
    sw = make("sliding_window", dropout=0.5)
    q, k, v = qkv()
    sw.eval()
    clean = sw(q, k, v)[0]
    sw.train()
    torch.manual_seed(1)
    a = sw(q, k, v)[0]
    torch.manual_seed(1)
    b = sw(q, k, v)[0]
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all() and not torch.allclose(a, clean)


def test_sliding_window_config_validation():
    with pytest.raises(ConfigError, match="window=-1"):
        AttentionConfig.from_dict({"backend": "sliding_window", "window": -1})
    with pytest.raises(ConfigError, match="global_tokens"):
        AttentionConfig.from_dict({"backend": "sliding_window", "global_tokens": [-2]})
    cfg = AttentionConfig.from_dict({"backend": "sliding_window", "global_tokens": []})
    assert cfg.backend_config().global_tokens == []


# --------------------------------------------------------------------------------------------
# LSH


def shared_qk_reference(q, v, mask=None):
    """Full attention over keys = normalised queries; a token sees itself only when alone."""
    keys = torch.nn.functional.normalize(q, dim=-1)
    t = q.shape[2]
    allowed = torch.ones(1, 1, t, t, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & ~mask[:, None, None, :]
    others = allowed & ~torch.eye(t, dtype=torch.bool)
    alone = ~others.any(-1, keepdim=True)
    return reference(q, keys, v, others | (alone & torch.eye(t, dtype=torch.bool)))[0]


@pytest.mark.parametrize("n_hashes", [1, 3])
def test_lsh_with_one_bucket_is_full_shared_qk_attention(n_hashes):
    q, k, v = qkv()
    mask = padding()
    lsh = make("lsh", bucket_size=16, n_hashes=n_hashes)
    torch.testing.assert_close(lsh(q, k, v, key_padding_mask=mask)[0],
                               shared_qk_reference(q, v, mask))
    torch.testing.assert_close(lsh(q, k, v)[0], shared_qk_reference(q, v))


def test_lsh_token_attends_to_itself_only_when_alone():
    q, k, v = qkv(t=5)
    mask = padding(5, (5, 1))  # the second sequence has one real token
    out = make("lsh", bucket_size=2)(q, k, v, key_padding_mask=mask)[0]
    torch.testing.assert_close(out[1, :, 0], v[1, :, 0])
    weights = make("lsh", bucket_size=8)(q, k, v, need_weights=True)[1].densify()
    assert torch.all(weights.diagonal(dim1=-2, dim2=-1) == 0)


def test_lsh_hashing_is_deterministic_under_the_seed():
    q, k, v = qkv(t=64)
    buckets = [make("lsh", seed=s, layer_idx=i)(q, k, v, need_weights=True)[1].buckets
               for s, i in ((0, 0), (0, 0), (1, 0), (0, 1))]
    assert torch.equal(buckets[0], buckets[1])
    assert not torch.equal(buckets[0], buckets[2])  # another seed
    assert not torch.equal(buckets[0], buckets[3])  # another layer
    # 64 tokens, chunks of 4: 2 * ceil(64 / 8) = 16 buckets, each used
    assert buckets[0].min() == 0 and buckets[0].max() == 15
    assert LSHAttention.capabilities.shared_qk


def test_lsh_buckets_mark_padding():
    q, k, v = qkv()
    w = make("lsh")(q, k, v, key_padding_mask=padding(), need_weights=True)[1]
    assert torch.all(w.buckets[1, :, :, 9:] == -1) and torch.all(w.buckets[0] >= 0)
    assert w.round_weights.shape == (B, H, 2, 13)


def test_lsh_config_validation():
    with pytest.raises(ConfigError, match="n_hashes=0"):
        AttentionConfig.from_dict({"backend": "lsh", "n_hashes": 0})
    with pytest.raises(ConfigError, match="bucket_size"):
        AttentionConfig.from_dict({"backend": "lsh", "bucket_size": "big"})


# --------------------------------------------------------------------------------------------
# Linformer


def identity_linformer(t: int, **params):
    lin = make("linformer", k=t, **params)
    with torch.no_grad():
        eye = torch.eye(MAX_LEN, t, dtype=torch.float64)
        lin.E.copy_(eye)
        if lin.F is not None:
            lin.F.copy_(eye)
    return lin


@pytest.mark.parametrize("share_kv", [False, True])
def test_linformer_with_identity_projections_is_full_attention(share_kv):
    q, k, v = qkv()
    lin = identity_linformer(13, share_kv=share_kv)
    full = make("full")
    torch.testing.assert_close(lin(q, k, v)[0], full(q, k, v)[0])
    torch.testing.assert_close(lin(q[:, :, :4], k, v)[0], full(q[:, :, :4], k, v)[0])
    w = lin(q, k, v, need_weights=True)[1]
    torch.testing.assert_close(w.densify(), full(q, k, v, need_weights=True)[1])


def test_linformer_share_kv_has_one_projection():
    assert [n for n, _ in make("linformer", share_kv=True).named_parameters()] == ["E"]
    assert [n for n, _ in make("linformer").named_parameters()] == ["E", "F"]


def test_linformer_initial_projection_is_segment_means():
    lin = make("linformer", k=4)  # 32 positions -> 4 segments of 8
    torch.testing.assert_close(lin.E.sum(0), torch.ones(4, dtype=torch.float64))
    assert torch.all(lin.E[:8, 0] == 1 / 8) and torch.all(lin.E[8:, 0] == 0)


def test_linformer_too_long_sequence_is_refused_by_the_declared_capability(monkeypatch):
    from lanistr.nn.attention import backends_table
    from lanistr.nn.attention.linformer import LinformerAttention

    assert LinformerAttention.capabilities.bounded_by_max_len
    assert not any(s.capabilities.bounded_by_max_len for s in list_backends() if s.name != "linformer")
    lin = make("linformer")
    q, k, v = qkv(t=MAX_LEN)
    assert torch.isfinite(lin(q, k, v)[0]).all()  # max_len itself is fine
    # The generic check refuses before the backend computes anything.
    monkeypatch.setattr(LinformerAttention, "attend", lambda *a, **kw: pytest.fail("attended"))
    q, k, v = qkv(t=MAX_LEN + 3)
    with pytest.raises(AttentionCapabilityError, match=rf"max_len={MAX_LEN}.*{MAX_LEN + 3}"):
        lin(q, k, v)
    with pytest.raises(AttentionCapabilityError, match=rf"max_len={MAX_LEN}.*{MAX_LEN + 3}"):
        lin(q[:, :, :4], k, v, cross=True)  # cross-attention: the keys' length counts
    row = {line.split()[0]: line.split() for line in backends_table().splitlines()}
    header = row["backend"]
    assert row["linformer"][header.index("max_len")] == "model"
    assert row["full"][header.index("max_len")] == "any"
    assert row["lsh"][header.index("shared_qk")] == "yes"


def test_linformer_config_validation():
    with pytest.raises(ConfigError, match="k=0"):
        AttentionConfig.from_dict({"backend": "linformer", "k": 0})


# --------------------------------------------------------------------------------------------
# in the model


@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "full"])
def test_model_runs_with_backend_and_ignores_padding(name):
    config = LanistrConfig.from_name("tiny", attention={"backend": name, **SMALL.get(name, {})})
    model = __import__("lanistr.nn", fromlist=["LanistrModel"]).LanistrModel(config).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        out = model(ids, mask, types, output_attentions=True)
        longer = model(torch.nn.functional.pad(ids, (0, 4)), torch.nn.functional.pad(mask, (0, 4)),
                       torch.nn.functional.pad(types, (0, 4)))
    real = mask.bool()
    torch.testing.assert_close(longer.last_hidden_state[:, :7][real], out.last_hidden_state[real],
                               atol=1e-5, rtol=1e-5)
    assert len(out.attentions) == config.num_layers
    for layer in out.attentions:
        weights = dense(layer)  # (3, 4, 7, 7)
        for i, n in enumerate(mask.sum(1).tolist()):  # real queries give padded keys nothing
            assert torch.all(weights[i, :, :n, n:] == 0)
            if get_backend(name).capabilities.weights_form != "lowrank":  # not probabilities
                torch.testing.assert_close(weights[i, :, :n].sum(-1), torch.ones(4, n))


def test_shared_qk_layer_skips_the_key_projection_with_the_same_output():
    """An LSH layer computes only the q and v row blocks of the fused ``qkv`` (same output as
    projecting all three, k unused); the key rows get a zero gradient, ``qkv`` keeps its shape."""
    from lanistr.nn import LanistrModel
    from lanistr.nn.layers import TokenLayout

    config = LanistrConfig.from_name("tiny", attention={"backend": "lsh", "bucket_size": 4})
    model = LanistrModel(config).eval()
    attn = model.encoder.layers[0].attention
    assert attn.shared_qk and attn.qkv.weight.shape == (3 * config.hidden_size, config.hidden_size)
    ids, mask, _ = padded_batch()
    layout = TokenLayout.from_mask(mask, *ids.shape)
    x = torch.randn(int(mask.sum()), config.hidden_size, requires_grad=True)
    calls = []
    attn.qkv.register_forward_hook(lambda *a: calls.append(1))
    out, _ = attn(x, layout)
    assert not calls  # the fused projection (with its key rows) never ran
    q, k, v = attn.split_heads(layout.pad(attn.qkv(x)), 3)  # all three, as before
    before = attn.out(layout.unpad(attn.attend(q, k, v, key_padding_mask=layout.key_padding_mask)[0]))
    torch.testing.assert_close(out, before, rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    d = config.hidden_size
    grad = attn.qkv.weight.grad
    assert torch.all(grad[d:2 * d] == 0) and torch.all(attn.qkv.bias.grad[d:2 * d] == 0)
    assert grad[:d].abs().sum() > 0 and grad[2 * d:].abs().sum() > 0


def test_switching_a_checkpoint_to_linformer_adds_fresh_projections(tmp_path):
    from lanistr.nn import LanistrModel

    LanistrModel(LanistrConfig.from_name("tiny")).save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LanistrModel.from_pretrained(tmp_path, attention={"backend": "linformer", "k": 8})
    assert any("freshly initialised" in str(w.message) for w in caught)
    backend = model.encoder.layers[0].attention.backend
    assert backend.E.shape == (64, 8)
    ids, mask, types = padded_batch()
    assert torch.isfinite(model(ids, mask, types).last_hidden_state).all()


@pytest.mark.parametrize("source_len", [5, 9])
def test_decoder_passes_cross_explicitly_whatever_the_lengths(source_len):
    """Cross-attention is the explicit ``cross=True`` (also when the source is as long as the
    target, which a length comparison would take for self-attention); self-attention, with a
    key/value cache longer than the new queries, is ``cross=False``."""
    from lanistr.nn.decoder import DecoderLayer, KVCache

    config = LanistrConfig.from_name("tiny")
    layer = DecoderLayer(config, 0).eval()
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, []).append((args[0].shape[-2], args[2].shape[-2],
                                              kwargs["cross"]))
        return hook

    layer.self_attention.backend.register_forward_pre_hook(record("self"), with_kwargs=True)
    layer.cross_attention.backend.register_forward_pre_hook(record("cross"), with_kwargs=True)
    memory = torch.randn(2, source_len, config.hidden_size)
    padding_ = torch.zeros(2, source_len, dtype=torch.bool)
    padding_[1, -2:] = True
    x = torch.randn(2, 9, config.hidden_size)
    with torch.no_grad():
        full, _, _ = layer(x, layer.cross_kv(memory), padding_)
    assert seen == {"self": [(9, 9, False)], "cross": [(9, source_len, True)]}
    # Incremental decoding: 1 new query against 9 cached keys is still self-attention.
    h, dh = config.num_heads, config.head_dim
    k = torch.zeros(1, 2, h, 16, dh)  # (L, B, H, T_max, Dh)
    cache = KVCache(k, k.clone(), [layer.cross_kv(memory)], padding_)
    with torch.no_grad():
        layer(x[:, :8], layer.cross_kv(memory), padding_, cache)
        cache.advance(8)
        last, _, _ = layer(x[:, 8:], layer.cross_kv(memory), padding_, cache)
    assert seen["self"][-1] == (1, 9, False) and seen["cross"][-1] == (1, source_len, True)
    torch.testing.assert_close(last, full[:, 8:], atol=1e-5, rtol=1e-5)
