"""Model core: equivalences and behaviour, not only shapes."""

import math

import pytest
import torch
from tests.conftest import padded_batch

from lanistr.config import LanistrConfig
from lanistr.nn import (
    LanistrForMaskedLM,
    LanistrForPreTraining,
    LanistrForSequenceClassification,
    LanistrForTokenClassification,
    LanistrModel,
)
from lanistr.nn.attention import AttentionCapabilityError, get_backend
from lanistr.nn.embeddings import sinusoidal_table


def test_sinusoidal_table_matches_design_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / (10000 ** (2 * i / 16))
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_lanistr_preset_scales_embeddings_by_sqrt_d():
    config = LanistrConfig.from_name("lanistr", vocab_size=50, num_layers=1, dropout=0.0,
                                     attention_dropout=0.0, max_len=16)
    model = LanistrModel(config)
    ids = torch.tensor([[3, 4, 5]])
    emb = model.encoder.embeddings(ids)
    expected = model.encoder.embeddings.token.weight[ids] * math.sqrt(512) + sinusoidal_table(16, 512)[:3]
    torch.testing.assert_close(emb, expected)


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("causal", [False, True])
def test_eager_and_sdpa_paths_agree(norm, causal):
    config = LanistrConfig.from_name("tiny", norm=norm)
    model = LanistrModel(config).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        fast = model.encoder(ids, mask, types, causal=causal)
        eager = model.encoder(ids, mask, types, causal=causal, output_attentions=True)
    real = mask.bool()
    torch.testing.assert_close(fast.last_hidden_state[real], eager.last_hidden_state[real],
                               atol=1e-5, rtol=1e-5)
    assert len(eager.attentions) == config.num_layers
    w = eager.attentions[0]
    assert w.shape == (3, 4, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 7))
    assert torch.all(w[1, :, :, 5:] == 0)  # padding keys get no attention
    if causal:
        assert torch.all(w[0].triu(1) == 0)


def test_padding_does_not_change_real_outputs(tiny_config):
    model = LanistrModel(tiny_config).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        batched = model(ids, mask, types).last_hidden_state
        for i, n in enumerate((7, 5, 3)):
            alone = model(ids[i:i + 1, :n], mask[i:i + 1, :n], types[i:i + 1, :n]).last_hidden_state
            torch.testing.assert_close(batched[i, :n], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.all(batched[2, 3:] == 0)


def test_hidden_states_and_outputs_are_typed(tiny_config):
    model = LanistrForMaskedLM(tiny_config).eval()
    ids, mask, types = padded_batch()
    out = model(ids, mask, types, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (3, 7, 99)
    assert len(out.hidden_states) == tiny_config.num_layers + 1
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    with torch.no_grad():  # the states are what the parts compute, in order
        emb = model.model.encoder.embeddings(ids, types)
        torch.testing.assert_close(out.hidden_states[0][mask.bool()], emb[mask.bool()])
        torch.testing.assert_close(out.logits, model.mlm_head(out.last_hidden_state))


def test_sparse_mlm_logits_equal_dense_logits(tiny_config):
    model = LanistrForMaskedLM(tiny_config).eval()
    ids, mask, types = padded_batch()
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[0, 2] = positions[1, 4] = positions[2, 0] = True
    with torch.no_grad():
        dense = model(ids, mask, types).logits
        sparse = model(ids, mask, types, mlm_positions=positions).logits
    torch.testing.assert_close(sparse, dense[positions])


def test_mlm_decoder_is_tied_to_embeddings(tiny_config):
    model = LanistrForMaskedLM(tiny_config)
    assert model.mlm_head.embedding[0] is model.model.encoder.embeddings.token
    assert not any("decoder" in k for k in model.state_dict())


def test_heads_shapes_and_pooling(tiny_config):
    cfg = tiny_config.replace(labels=["a", "b", "c"], pooling="mean")
    ids, mask, types = padded_batch()
    cls = LanistrForSequenceClassification(cfg).eval()
    out = cls(ids, mask, types)
    assert out.logits.shape == (3, 3)
    h = out.last_hidden_state
    torch.testing.assert_close(out.pooled[2], h[2, :3].mean(0))
    torch.testing.assert_close(out.logits, cls.classifier(out.pooled))
    tag = LanistrForTokenClassification(cfg).eval()
    tagged = tag(ids, mask, types)
    assert tagged.logits.shape == (3, 7, 3)
    # One label distribution per token, from that token's state alone.
    torch.testing.assert_close(tagged.logits[1, 4], tag.classifier(tagged.last_hidden_state[1, 4]))
    pre = LanistrForPreTraining(tiny_config.replace(use_pooler=True)).eval()
    nsp = pre(ids, mask, types)
    assert nsp.nsp_logits.shape == (3, 2)
    pooled = pre.model.pooler(nsp.last_hidden_state[:, 0])  # the BERT pooler reads [CLS]
    torch.testing.assert_close(nsp.nsp_logits, pre.nsp_head(pooled))


def test_too_long_input_is_a_clear_error(tiny_config):
    from lanistr.errors import LanistrError

    model = LanistrModel(tiny_config)
    with pytest.raises(LanistrError, match="max_len=64"):
        model(torch.ones(1, 65, dtype=torch.long))


def test_capability_error_names_a_backend_that_can():
    from lanistr.nn.attention.full import FullAttention

    class NoWeights(FullAttention):
        capabilities = get_backend("full").capabilities.__class__(returns_weights=False)

    backend = NoWeights(None, max_len=8)
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(AttentionCapabilityError, match="full"):
        backend(q, q, q, need_weights=True)


def test_lanistr_preset_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    config = LanistrConfig.from_name("lanistr", vocab_size=120, hidden_size=64, num_heads=4,
                                     ffn_dim=128, num_layers=2, max_len=32, dropout=0.0,
                                     attention_dropout=0.0)
    model = LanistrForMaskedLM(config)
    ids = torch.randint(5, 120, (8, 16))
    labels = ids.clone()
    masked = torch.rand(8, 16) < 0.3
    masked[:, 0] = True
    inputs = ids.masked_fill(masked, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        logits = model(inputs, mlm_positions=masked).logits
        loss = torch.nn.functional.cross_entropy(logits, labels[masked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("backend", ["full", "sliding_window", "linformer", "lsh"])
@pytest.mark.parametrize(("cls", "pooler"), [
    (LanistrForMaskedLM, False), (LanistrForMaskedLM, True), (LanistrForPreTraining, True),
    (LanistrForSequenceClassification, False), (LanistrForSequenceClassification, True),
    (LanistrForTokenClassification, False), (LanistrForTokenClassification, True)])
def test_uses_every_parameter_is_exact(tiny_config, cls, pooler, backend):
    """What DDP's find_unused_parameters is decided from (Trainer._wrap): when a model says it
    uses every parameter, one training forward/backward gives each a gradient; when it says
    not, some parameter really gets none."""
    small = {"sliding_window": {"window": 2}, "linformer": {"k": 4}, "lsh": {"bucket_size": 4}}
    cfg = tiny_config.replace(labels=["a", "b", "c"], use_pooler=pooler,
                              attention={"backend": backend, **small.get(backend, {})})
    model = cls(cfg).train()
    ids, mask, types = padded_batch()
    out = model(ids, mask, types)
    loss = out.logits.square().mean() + (out.nsp_logits.square().mean()
                                         if out.nsp_logits is not None else 0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert model.uses_every_parameter == (not missing), missing
