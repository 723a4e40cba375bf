"""Export: Hugging Face round trips through `transformers`, one-line refusals, ONNX graphs that
equal PyTorch on padded batches, int8 quantization, and `predict --runtime onnx`."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest
import torch

from lanistr.checkpoint import read_config, read_weights
from lanistr.cli import main
from lanistr.config import LanistrConfig
from lanistr.data.tokenizer import Tokenizer, train_tokenizer
from lanistr.nn import load_model
from lanistr.nn.models import (
    LanistrForMaskedLM,
    LanistrForPreTraining,
    LanistrForSequenceClassification,
    LanistrForTokenClassification,
    LanistrModel,
)

transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

WORDS = ("the a to of and in is it you for free win money now click prize meeting thursday "
         "send slides report senate tax").split()
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
         + list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
         + list(".,!?"))
TEXTS = ["win free money now", "send the slides thursday, the meeting report about tax",
         "click", "the senate report on the tax prize!"]
LABELS = {0: "ham", 1: "spam", 2: "other"}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- Hugging Face


def _hf_model(cls, tmp_path, **kw):
    """A tiny random BERT of class ``cls`` with a real WordPiece vocabulary, saved with its
    tokenizer. Weights are widened so that a wrong mapping cannot hide under the tolerance."""
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=37,
                                  max_position_embeddings=64, **kw)
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "hf"
    model.save_pretrained(path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(path)
    return model, path


def _outputs(model, enc) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**enc)
    names = ("last_hidden_state", "pooler_output", "logits", "prediction_logits",
             "seq_relationship_logits")
    return {n: getattr(out, n) for n in names if getattr(out, n, None) is not None}


HF_CASES = [
    # (transformers class, Auto class, lanistr class to load the conversion as, labelled)
    ("BertModel", "AutoModel", LanistrModel, False),
    ("BertForMaskedLM", "AutoModelForMaskedLM", LanistrForMaskedLM, False),
    ("BertForPreTraining", "AutoModelForPreTraining", LanistrForPreTraining, False),
    ("BertForSequenceClassification", "AutoModelForSequenceClassification",
     LanistrForSequenceClassification, True),
    ("BertForTokenClassification", "AutoModelForTokenClassification",
     LanistrForTokenClassification, True),
]


@pytest.mark.parametrize("hf_cls,auto_cls,ours_cls,labelled", HF_CASES,
                         ids=[c[0] for c in HF_CASES])
def test_hf_round_trip_gives_transformers_the_same_model(tmp_path, hf_cls, auto_cls, ours_cls,
                                                         labelled):
    kw = dict(num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}) \
        if labelled else {}
    ref, hf_dir = _hf_model(getattr(transformers, hf_cls), tmp_path, **kw)
    with warnings.catch_warnings():  # a bare BertModel gets a fresh MLM head, with a warning
        warnings.simplefilter("ignore")
        assert main(["convert-hf", str(hf_dir), str(tmp_path / "converted")]) == 0
    ours = ours_cls.from_pretrained(tmp_path / "converted").eval()
    if ours_cls is not LanistrModel:  # convert-hf makes a bare BertModel a LanistrForMaskedLM
        assert type(load_model(tmp_path / "converted")) is ours_cls
    src = tmp_path / "checkpoint"
    ours.save_pretrained(src)
    for file in (tmp_path / "converted").glob("tokenizer*.json"):
        (src / file.name).write_bytes(file.read_bytes())

    assert main(["export", "--format", "hf", str(src), str(tmp_path / "back")]) == 0
    back = getattr(transformers, auto_cls).from_pretrained(tmp_path / "back").eval()
    assert type(back).__name__ == hf_cls
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    assert int(enc["attention_mask"].sum()) < enc["attention_mask"].numel()  # really padded
    want, got = _outputs(ref, enc), _outputs(back, enc)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=0)
    if labelled:
        assert back.config.id2label == LABELS
        assert back.config.label2id == {v: k for k, v in LABELS.items()}

    # The exact inverse of the import: every tensor of the original comes back bit for bit.
    original, exported = read_weights(hf_dir), read_weights(tmp_path / "back")
    assert set(exported) == set(original)
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor), name


def test_hf_export_of_a_lanistr_trained_tokenizer_tokenizes_the_same(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TEXTS * 3) + "\n", encoding="utf-8")
    train_tokenizer([corpus], 90, tmp_path / "tok")
    ours_tok = Tokenizer.from_pretrained(tmp_path / "tok")
    config = LanistrConfig.from_name("tiny", vocab_size=ours_tok.vocab_size, use_pooler=True,
                                     labels=["ham", "spam"])
    model = LanistrForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    ours_tok.save_pretrained(tmp_path / "ckpt")
    assert main(["export", "--format", "hf", str(tmp_path / "ckpt"), str(tmp_path / "hf")]) == 0

    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    pairs = ["a prize", "the report"] * 2
    enc = tok(TEXTS, pairs, padding=True, return_tensors="pt")
    mine = ours_tok.encode(TEXTS, pairs, max_length=64)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(enc[name], mine[name]), name
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        want = model(**mine.model_inputs()).logits
        got = back.eval()(**enc).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert back.config.id2label == {0: "ham", 1: "spam"}


@pytest.mark.parametrize("overrides,field", [
    (dict(preset="lanistr"), "position='sinusoidal'"),
    (dict(embed_scale=True), "embed_scale=true"),
    (dict(norm="pre"), "norm='pre'"),
    (dict(embed_layer_norm=False), "embed_layer_norm=false"),
    (dict(type_vocab_size=0), "type_vocab_size=0"),
    (dict(attention={"backend": "sliding_window", "window": 4}),
     "attention.backend='sliding_window'"),
    (dict(use_pooler=False), "use_pooler=false"),
    (dict(use_pooler=False, pooling="mean"), "use_pooler=false"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_hf_export_refuses_what_bert_cannot_represent(tmp_path, capsys, overrides, field):
    preset = overrides.pop("preset", "tiny")
    size = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, ffn_dim=37, max_len=64)
    config = LanistrConfig.from_any({"preset": preset, **size, "use_pooler": True,
                                     "labels": ["a", "b"], **overrides})
    LanistrForSequenceClassification(config).save_pretrained(tmp_path / "ckpt")
    err = _error(capsys, ["export", "--format", "hf", str(tmp_path / "ckpt"),
                          str(tmp_path / "out")])
    assert f"model.{field} cannot be exported to Hugging Face BERT" in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_bad_paths_with_one_line(tmp_path, capsys):
    config = LanistrConfig.from_name("tiny", use_pooler=True, labels=["a", "b"])
    ckpt = tmp_path / "ckpt"
    LanistrForSequenceClassification(config).save_pretrained(ckpt)
    assert "not a lanistr checkpoint" in _error(
        capsys, ["export", "--format", "hf", str(tmp_path), str(tmp_path / "o")])
    assert "no such checkpoint directory" in _error(
        capsys, ["export", "--format", "onnx", str(tmp_path / "nope"), str(tmp_path / "o")])
    (tmp_path / "file").write_text("x")
    assert "is a file" in _error(capsys, ["export", "--format", "hf", str(ckpt),
                                          str(tmp_path / "file")])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "--overwrite" in _error(capsys, ["export", "--format", "hf", str(ckpt), str(full)])
    assert (full / "keep.txt").read_text() == "mine"
    assert "checkpoint being exported" in _error(
        capsys, ["export", "--format", "hf", str(ckpt), str(ckpt), "--overwrite"])
    assert "--format onnx only" in _error(
        capsys, ["export", "--format", "hf", str(ckpt), str(tmp_path / "o"), "--quantize", "int8"])
    with pytest.warns(UserWarning, match="no tokenizer"):
        assert main(["export", "--format", "hf", str(ckpt), str(full), "--overwrite"]) == 0
    assert not (full / "keep.txt").exists() and (full / "model.safetensors").is_file()


# --------------------------------------------------------------------------- ONNX

TINY = dict(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, ffn_dim=37, max_len=64)
ONNX_CASES = [
    (LanistrModel, "tiny", {}),
    (LanistrForMaskedLM, "tiny", {}),
    (LanistrForPreTraining, "tiny", {"use_pooler": True}),
    (LanistrForSequenceClassification, "tiny", {"use_pooler": True}),
    (LanistrForSequenceClassification, "tiny", {"pooling": "mean", "dropout": 0.1}),
    (LanistrForTokenClassification, "tiny", {}),
    # the original design (sinusoidal, x sqrt(d), ReLU, no segments): ONNX holds it, HF cannot
    (LanistrForSequenceClassification, "lanistr", {}),
    (LanistrForSequenceClassification, "tiny", {"norm": "pre"}),
]


def _padded(b: int, t: int, lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (b, t), generator=g)
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = (torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * mask
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("cls,preset,overrides", ONNX_CASES,
                         ids=[f"{c.__name__}-{p}-{'-'.join(o)}" for c, p, o in ONNX_CASES])
def test_onnx_equals_pytorch_on_padded_batches(tmp_path, cls, preset, overrides):
    labels = [] if cls in (LanistrModel, LanistrForMaskedLM, LanistrForPreTraining) else ["x", "y", "z"]
    config = LanistrConfig.from_any({"preset": preset, **TINY, "labels": labels, **overrides})
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="holds no tokenizer"):
        assert main(["export", "--format", "onnx", str(tmp_path / "ckpt"),
                     str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    inputs = session.get_inputs()
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size else [])
    assert [i.name for i in inputs] == expected == info["inputs"]
    assert all(i.type == "tensor(int64)" and isinstance(i.shape[0], str)
               and isinstance(i.shape[1], str) for i in inputs)  # dynamic batch and sequence
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == (["last_hidden_state"] if cls is LanistrModel
                       else ["logits", "nsp_logits"] if cls is LanistrForPreTraining
                       else ["logits"])
    for b, t, lengths in ((2, 9, [9, 4]), (1, 6, [6]), (4, 17, [3, 17, 10, 5]), (3, 5, [5, 5, 5])):
        batch = _padded(b, t, lengths, seed=t)
        with torch.no_grad():
            want = model(**batch)
        got = session.run(None, {i.name: batch[i.name].numpy() for i in inputs})
        for name, value in zip(outputs, got):
            np.testing.assert_allclose(value, getattr(want, name).numpy(), atol=1e-4, rtol=0)


def test_onnx_export_refuses_other_attention_backends(tmp_path, capsys):
    config = LanistrConfig.from_any({"preset": "tiny", "labels": ["a", "b"],
                                     "attention": {"backend": "linformer", "k": 8}})
    LanistrForSequenceClassification(config).save_pretrained(tmp_path / "ckpt")
    err = _error(capsys, ["export", "--format", "onnx", str(tmp_path / "ckpt"),
                          str(tmp_path / "out")])
    assert "model.attention.backend='linformer' cannot be exported to ONNX" in err


# --------------------------------------------------------------------------- fine-tuned model

FRUIT = "apple banana cherry grape lemon mango peach plum".split()
STONE = "rock stone metal iron steel brick sand clay".split()


def _toy_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["fruit", "stone"])
        words = [rng.choice(FRUIT if label == "fruit" else STONE) for _ in range(rng.randint(1, 9))]
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny classifier fine-tuned with `lanistr finetune` (BERT pooler, so both formats take
    it), exported to ONNX with int8, and a held-out file of texts of many lengths."""
    tmp = tmp_path_factory.mktemp("finetuned")
    rows = _toy_rows(0, 48)
    train = tmp / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    test = tmp / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in _toy_rows(1, 40)), encoding="utf-8")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(r["text"] for r in rows) + "\n", encoding="utf-8")
    train_tokenizer([corpus], 80, tmp / "tok")
    sets = {"task": "classify", "init": "scratch", "data.tokenizer": tmp / "tok",
            "data.train": train, "data.max_len": 32, "model.preset": "tiny",
            "model.use_pooler": "true", "train.lr": 3e-3, "train.batch_size": 8,
            "train.epochs": 8, "train.progress": "false", "train.save_every": 1000}
    argv = ["finetune", "--output", str(tmp / "run")]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    model = tmp / "run" / "model"
    assert main(["export", "--format", "onnx", "--quantize", "int8", str(model),
                 str(tmp / "onnx")]) == 0
    return {"model": model, "onnx": tmp / "onnx", "test": test, "dir": tmp}


def test_onnx_export_is_self_describing(finetuned):
    out = finetuned["onnx"]
    info = json.loads((out / "export.json").read_text())
    assert info["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    assert info["labels"] == ["fruit", "stone"] and info["max_abs_diff"] <= 1e-4
    assert read_config(out).labels == ["fruit", "stone"]  # the checkpoint's own config.json
    assert (out / "finetune.json").is_file() and (out / "tokenizer.json").is_file()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("plum rock")["input_ids"] == Tokenizer.from_pretrained(out).encode(
        ["plum rock"]).input_ids[0].tolist()


def test_int8_agrees_with_fp32_on_most_inputs(finetuned):
    from lanistr.export.onnx import OnnxRunner

    texts = [json.loads(line)["text"] for line in finetuned["test"].read_text().splitlines()]
    tok = Tokenizer.from_pretrained(finetuned["onnx"])
    batch = tok.encode(texts, max_length=32).model_inputs()
    fp32 = OnnxRunner.from_export(finetuned["onnx"])(**batch).logits
    int8 = OnnxRunner.from_export(finetuned["onnx"] / "model.int8.onnx")(**batch).logits
    assert (fp32.argmax(-1) == int8.argmax(-1)).float().mean() >= 0.9
    assert (fp32 - int8).abs().max() < 0.5 * fp32.abs().max()  # close, but not the same graph
    assert not torch.equal(fp32, int8)

    import onnx  # every linear layer (a Gemm in the fp32 graph) has int8 weights
    ops = [n.op_type for n in onnx.load(str(finetuned["onnx"] / "model.int8.onnx")).graph.node]
    linears = sum(isinstance(m, torch.nn.Linear) for m in load_model(finetuned["model"]).modules())
    assert ops.count("MatMulInteger") == linears and "Gemm" not in ops


def test_predict_and_evaluate_with_the_onnx_runtime_match_torch(finetuned, capsys, tmp_path):
    texts = ["plum apple mango", "iron rock", "sand", "peach clay brick lemon plum grape"]
    runs = {}
    for runtime, model in (("torch", finetuned["model"]), ("onnx", finetuned["onnx"])):
        assert main(["predict", "--model", str(model), "--runtime", runtime, *texts]) == 0
        runs[runtime] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in runs["onnx"]] == [r["label"] for r in runs["torch"]]
    assert [r["label"] for r in runs["torch"]][:2] == ["fruit", "stone"]
    for a, b in zip(runs["onnx"], runs["torch"]):
        for label, p in a["probabilities"].items():
            assert abs(p - b["probabilities"][label]) < 1e-4

    metrics = {}
    for runtime, model in (("torch", finetuned["model"]), ("onnx", finetuned["onnx"]),
                           ("onnx", finetuned["onnx"] / "model.int8.onnx")):
        out = tmp_path / f"{runtime}-{model.name}.json"
        assert main(["evaluate", "--model", str(model), "--runtime", runtime, "--data",
                     str(finetuned["test"]), "--output", str(out), "--no-progress"]) == 0
        metrics[(runtime, model.name)] = json.loads(out.read_text())
    capsys.readouterr()
    torch_acc = metrics[("torch", "model")]["accuracy"]
    assert metrics[("onnx", "onnx")]["accuracy"] == torch_acc
    assert abs(metrics[("onnx", "model.int8.onnx")]["accuracy"] - torch_acc) <= 0.1


def test_onnx_runtime_needs_an_export(finetuned, capsys):
    err = _error(capsys, ["predict", "--model", str(finetuned["model"]), "--runtime", "onnx", "x"])
    assert "no model.onnx" in err and "lanistr export --format onnx" in err


def test_finetuned_classifier_exports_to_transformers(finetuned, tmp_path):
    assert main(["export", "--format", "hf", str(finetuned["model"]), str(tmp_path / "hf")]) == 0
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.model_max_length == 32  # the fine-tuning length, from finetune.json
    texts = ["plum apple mango", "iron rock sand clay brick"]
    enc = tok(texts, padding=True, return_tensors="pt")
    ours = load_model(finetuned["model"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(**enc).logits, ours(**enc).logits, atol=1e-5,
                                   rtol=0)
    assert back.config.id2label == {0: "fruit", 1: "stone"}


def test_hf_export_of_a_head_tail_model_says_how_it_read_long_texts(finetuned, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(finetuned["model"], model)
    meta = json.loads((model / "finetune.json").read_text(encoding="utf-8"))
    assert main(["export", "--format", "hf", str(model), str(tmp_path / "head")]) == 0
    head = json.loads((tmp_path / "head" / "config.json").read_text(encoding="utf-8"))
    assert "lanistr_truncation" not in head
    (model / "finetune.json").write_text(json.dumps({**meta, "truncation": "head_tail"}),
                                         encoding="utf-8")
    with pytest.warns(UserWarning, match="head and tail of texts longer than 32 tokens"):
        assert main(["export", "--format", "hf", str(model), str(tmp_path / "hf")]) == 0
    saved = json.loads((tmp_path / "hf" / "config.json").read_text(encoding="utf-8"))
    assert saved["lanistr_truncation"] == "head_tail"
    back = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    assert back.lanistr_truncation == "head_tail"  # transformers keeps it on the config
    # a refused output (it exists) is only the one-line error: no warning about a model
    # that is not written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["export", "--format", "hf", str(model), str(tmp_path / "hf")]) == 2
    assert not [w for w in caught if "head and tail" in str(w.message)]
