"""Fine-tuning (classify + tag), evaluate, predict, and the metrics behind them."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import read_metric

from lanistr import metrics as M
from lanistr.checkpoint import read_weights
from lanistr.cli import main
from lanistr.config import LanistrConfig
from lanistr.data.tokenizer import Tokenizer, train_tokenizer
from lanistr.nn import LanistrForMaskedLM, LanistrForSequenceClassification
from lanistr.tasks import finetune as ft
from lanistr.tasks import labelled, objectives, param_groups, predict, run_config

FRUIT = "apple banana cherry grape lemon mango peach plum".split()
STONE = "rock stone metal iron steel brick sand clay".split()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread (and do not stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_fixtures():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sentences(rng, n, lo=3, hi=8):
    out = []
    for _ in range(n):
        label = rng.choice(["fruit", "stone"])
        pool = FRUIT if label == "fruit" else STONE
        out.append((label, [rng.choice(pool) for _ in range(rng.randint(lo, hi))]))
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A separable toy classification set, a CoNLL tagging set and a tokenizer for both."""
    tmp = tmp_path_factory.mktemp("toy")
    rng = random.Random(0)
    rows = [{"text": " ".join(w), "label": label} for label, w in _sentences(rng, 48)]
    train = write_jsonl(tmp / "train.jsonl", rows)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(r["text"] for r in rows) + "\n", encoding="utf-8")
    tok = tmp / "tok"
    train_tokenizer([corpus], 80, tok)
    # Tagging: every word tagged F (fruit) or S (stone); sentences mix both kinds.
    lines = []
    for _ in range(40):
        words = [rng.choice(FRUIT + STONE) for _ in range(rng.randint(2, 7))]
        lines += [f"{w}\t{'F' if w in FRUIT else 'S'}" for w in words] + [""]
    conll = tmp / "train.conll"
    conll.write_text("\n".join(lines), encoding="utf-8")
    return {"dir": tmp, "train": train, "tok": tok, "conll": conll}


def toy_sets(toy, task="classify", drop=(), **extra):
    train = toy["conll"] if task == "tag" else toy["train"]
    sets = {"task": task, "init": "scratch", "data.tokenizer": toy["tok"], "data.train": train,
            "data.max_len": 32, "model.preset": "tiny", "train.lr": 3e-3, "train.batch_size": 8,
            "train.epochs": 8, "train.progress": "false", "train.save_every": 1000}
    sets.update(extra)
    for key in drop:
        del sets[key]
    args = []
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


@pytest.fixture(scope="module")
def classifier(toy):
    out = toy["dir"] / "cls"
    assert main(["finetune", "--output", str(out), *toy_sets(toy)]) == 0
    return out / "model"


@pytest.fixture(scope="module")
def tagger(toy):
    out = toy["dir"] / "tag"
    assert main(["finetune", "--output", str(out), *toy_sets(toy, "tag")]) == 0
    return out / "model"


# --------------------------------------------------------------------------- learning


def test_tiny_classifier_learns_the_toy_set(classifier, toy):
    predictor = predict.Predictor(classifier)
    assert predictor.labels == ["fruit", "stone"]  # sorted training labels, in config.json
    assert json.loads((classifier / "config.json").read_text())["labels"] == ["fruit", "stone"]
    m = predictor.evaluate_file(toy["train"])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0


def test_tiny_tagger_learns_the_toy_set(tagger, toy):
    predictor = predict.Predictor(tagger)
    assert predictor.kind == "tag" and predictor.labels == ["F", "S"]
    m = predictor.evaluate_file(toy["conll"])
    assert m["token_accuracy"] == 1.0


def test_eval_set_selects_the_best_model_and_test_metrics_are_written(toy, tmp_path):
    out = tmp_path / "run"
    args = toy_sets(toy, **{"data.eval": toy["train"], "data.test": toy["train"],
                            "train.epochs": 2, "train.eval_every": 3})
    assert main(["finetune", "--output", str(out), *args]) == 0
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["task"] == "classify" and set(test["per_class"]) == {"fruit", "stone"}
    assert (out / "best").is_dir() and (out / "model" / "finetune.json").is_file()


# --------------------------------------------------------------------------- data handling


def test_tag_labels_go_to_the_first_piece_of_each_word(toy, tmp_path):
    from lanistr.data.readers import read_conll

    tok = Tokenizer.from_pretrained(toy["tok"])
    word = "lemonade"  # lemon ##a ##d ##e: several pieces
    assert len(tok.tokenize(word)) > 1
    conll = tmp_path / "s.conll"
    conll.write_text(f"plum\tF\n{word}\tS\nrock\tS\n", encoding="utf-8")
    sentences = read_conll(conll)
    ids, targets, cut = labelled.encode_tagged(tok, sentences, ["F", "S"], 32)
    expected = [-100]  # [CLS]
    for w, tag in (("plum", 0), (word, 1), ("rock", 1)):
        expected += [tag] + [-100] * (len(tok.tokenize(w)) - 1)
    expected += [-100]  # [SEP]
    assert targets[0].tolist() == expected and cut == 0
    assert len(ids[0]) == len(expected)


def test_truncation_is_counted_and_reported(toy, tmp_path, capsys):
    long = write_jsonl(tmp_path / "long.jsonl", [{"text": "apple " * 50, "label": "fruit"},
                                                 {"text": "rock", "label": "stone"}])
    args = toy_sets(toy, **{"data.train": long, "train.epochs": 1, "train.batch_size": 2})
    assert main(["finetune", "--output", str(tmp_path / "r"), *args]) == 0
    assert "1 of 2 examples truncated to max_len" in capsys.readouterr().out


def test_head_tail_truncation_trains_and_predicts_alike(toy, tmp_path):
    """A model fine-tuned with data.truncation=head_tail reads texts the same way when it
    predicts: a long text whose label word sits at its end is seen at both times."""
    from lanistr.tasks.predict import Predictor

    rows = [{"text": "filler " * 40 + ("apple" if i % 2 else "rock"),
             "label": "fruit" if i % 2 else "stone"} for i in range(24)]
    train = write_jsonl(tmp_path / "long.jsonl", rows)
    args = toy_sets(toy, **{"data.train": train, "data.truncation": "head_tail",
                            "train.epochs": 1, "train.batch_size": 4})
    assert main(["finetune", "--output", str(tmp_path / "r"), *args]) == 0
    predictor = Predictor(tmp_path / "r" / "model")
    assert predictor.truncation == "head_tail"
    texts = [r["text"] for r in rows[:6]]
    ids, _, cut = labelled.encode_texts(predictor.tokenizer, texts, None, predictor.max_len,
                                        truncation="head_tail")
    assert cut == len(texts)
    apple = predictor.tokenizer.encode("apple", max_length=8).input_ids[0, 1:-1].tolist()
    assert all(x[-1 - len(apple):-1].tolist() == apple for x in ids[1::2])  # the end is kept
    probs, _ = predictor.classify(texts)
    batch = labelled.pad_batch(ids, predictor.tokenizer.pad_id)
    with torch.no_grad():
        logits = predictor.model(batch["input_ids"], batch["attention_mask"],
                                 batch["token_type_ids"]).logits
    np.testing.assert_allclose(probs, logits.softmax(-1).double().numpy(), atol=1e-5)
    # `lanistr visualize` draws the tokens the model reads (its head and tail)
    from lanistr.commands.visualize import visualize

    summary = visualize(tmp_path / "r" / "model", texts[1], tmp_path / "viz")
    assert summary["tokens"] == predictor.tokenizer.convert_ids_to_tokens(ids[1].tolist())


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_eval_label_names_file_line_and_label(toy, tmp_path, capsys):
    ev = write_jsonl(tmp_path / "eval.jsonl", [{"text": "plum", "label": "fruit"},
                                               {"text": "sand", "label": "stone"},
                                               {"text": "hmm", "label": "vegetable"}])
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "r"),
                          *toy_sets(toy, **{"data.eval": ev})])
    assert f"{ev}:3" in err and "'vegetable'" in err


def test_empty_file_and_missing_column_are_one_line_errors(toy, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "a"),
                          *toy_sets(toy, **{"data.train": empty})])
    assert str(empty) in err and "empty" in err
    csv = tmp_path / "t.csv"
    csv.write_text("body,label\nplum,fruit\n", encoding="utf-8")
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "b"),
                          *toy_sets(toy, **{"data.train": csv})])
    assert f"{csv}:1" in err and "'text'" in err


def test_no_truncate_fails_naming_file_and_line(toy, tmp_path, capsys):
    rows = [{"text": "plum", "label": "fruit"}, {"text": "rock", "label": "stone"},
            {"text": "apple " * 40, "label": "fruit"}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "r"), "--no-truncate",
                          *toy_sets(toy, **{"data.train": data})])
    assert f"{data}:3" in err and "max_len=32" in err


def test_bad_metric_and_scratch_without_tokenizer_are_config_errors(toy, tmp_path, capsys):
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "a"),
                          *toy_sets(toy, **{"finetune.metric": "bleu"})])
    assert "finetune.metric" in err and "macro_f1" in err
    err = _error(capsys, ["finetune", "--output", str(tmp_path / "b"),
                          *toy_sets(toy, drop=["data.tokenizer"])])
    assert "data.tokenizer" in err


# --------------------------------------------------------------------------- predict / evaluate


def test_predict_writes_label_and_probabilities(classifier, capsys, tmp_path):
    assert main(["predict", "--model", str(classifier), "plum apple mango", "iron rock"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["plum apple mango", "iron rock"]
    assert [r["label"] for r in rows] == ["fruit", "stone"]
    for r in rows:
        assert set(r) == {"text", "label", "probabilities"}
        assert set(r["probabilities"]) == {"fruit", "stone"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-5
    src = tmp_path / "in.txt"
    src.write_text("plum\nsand clay\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(classifier), "--input", str(src),
                 "--output", str(out)]) == 0
    assert [json.loads(x)["label"] for x in out.read_text().splitlines()] == ["fruit", "stone"]


def test_predict_tags_every_whitespace_word(tagger, capsys):
    assert main(["predict", "--model", str(tagger), "plum rock  apple"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row == {"words": ["plum", "rock", "apple"], "tags": ["F", "S", "F"]}


def test_tagger_tags_sentences_longer_than_max_len_in_chunks(tagger):
    predictor = predict.Predictor(tagger)
    words = [FRUIT[i % 8] if i % 3 else STONE[i % 8] for i in range(70)]  # > max_len 32
    tags, long = predictor.tag([words])
    assert long == 1 and tags[0] == ["F" if w in FRUIT else "S" for w in words]


def test_evaluate_writes_metrics_and_confusion_png(classifier, toy, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(classifier), "--data", str(toy["train"]),
                 "--output", str(out), "--no-progress"]) == 0
    m = json.loads(out.read_text())
    assert m["accuracy"] == 1.0 and m["confusion_matrix"][0][1] == 0
    assert (tmp_path / "m_confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy 1.0000" in capsys.readouterr().out


# --------------------------------------------------------------------------- metrics


def test_classification_metrics_equal_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(30):
        k = int(rng.integers(2, 6))
        t, p = rng.integers(0, k, 25), rng.integers(0, k, 25)
        labels = [f"c{i}" for i in range(k)]
        s = M.classification_scores(t, p, labels)
        assert s["accuracy"] == pytest.approx(sk.accuracy_score(t, p))
        assert s["macro_f1"] == pytest.approx(sk.f1_score(t, p, average="macro", zero_division=0))
        prec, rec, f1, sup = sk.precision_recall_fscore_support(t, p, labels=range(k),
                                                                zero_division=0)
        got = np.array([[c["precision"], c["recall"], c["f1"], c["support"]]
                        for c in s["per_class"].values()])
        np.testing.assert_allclose(got, np.stack([prec, rec, f1, sup], 1))
        assert s["confusion_matrix"] == sk.confusion_matrix(t, p, labels=range(k)).tolist()


def test_entity_metrics_equal_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-MISC", "E-LOC", "S-PER"]
    rng = np.random.default_rng(1)
    for _ in range(200):
        gold = [[tags[i] for i in rng.integers(0, 8, rng.integers(1, 10))] for _ in range(3)]
        pred = [[tags[i] for i in rng.integers(0, 8, len(g))] for g in gold]
        for g in gold:
            assert M.entity_spans(g) == get_entities(g)
        if not any(get_entities(g) for g in gold):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
        ours = M.entity_scores(M.entity_counts(gold, pred))
        assert ours["entity_f1"] == pytest.approx(ref["micro avg"]["f1-score"])
        for name, s in ours["per_type"].items():
            if name in ref:
                assert s["f1"] == pytest.approx(ref[name]["f1-score"])


# --------------------------------------------------------------------------- training options


def _encoder_checkpoint(toy, tmp_path):
    tok = Tokenizer.from_pretrained(toy["tok"])
    config = LanistrConfig.from_name("tiny", vocab_size=tok.vocab_size, dropout=0.0)
    model = LanistrForMaskedLM(config)
    model.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    return tmp_path / "enc"


def test_frozen_layers_stay_bitwise_unchanged(toy, tmp_path):
    init = _encoder_checkpoint(toy, tmp_path)
    args = toy_sets(toy, init=init, drop=["model.preset"],
                    **{"finetune.freeze_layers": 1, "train.epochs": 1, "train.lr": 1e-2})
    assert main(["finetune", "--output", str(tmp_path / "r"), *args]) == 0
    before, after = read_weights(init), read_weights(tmp_path / "r" / "model")
    frozen = [k for k in before if k.startswith(("model.encoder.embeddings.",
                                                 "model.encoder.layers.0."))]
    trained = [k for k in before if k.startswith("model.encoder.layers.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_layer_lr_decay_scales_each_depth():
    model = LanistrForMaskedLM(LanistrConfig.from_name("tiny"))  # 2 layers
    groups = param_groups.layer_decay_groups(model, 1.0, 0.01, 0.5)
    by_name = {id(p): g["lr"] for g in groups for p in g["params"]}
    lr = {n: by_name[id(p)] for n, p in model.named_parameters()}
    assert lr["model.encoder.embeddings.token.weight"] == 0.125
    assert lr["model.encoder.embeddings.norm.bias"] == 0.125
    assert all(v == 0.25 for n, v in lr.items() if n.startswith("model.encoder.layers.0."))
    assert all(v == 0.5 for n, v in lr.items() if n.startswith("model.encoder.layers.1."))
    assert lr["mlm_head.dense.weight"] == 1.0
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay[id(named["model.encoder.layers.0.ffn.fc1.weight"])] == 0.01
    assert decay[id(named["model.encoder.layers.0.ffn_norm.weight"])] == 0.0


def test_balanced_class_weights_weight_the_loss_and_its_count(toy):
    tok = Tokenizer.from_pretrained(toy["tok"])
    texts = ["plum", "rock", "iron", "sand"]
    ids, types, _ = labelled.encode_texts(tok, texts, None, 16)
    data = labelled.Encoded("x", [1, 2, 3, 4], ids, types, np.array([0, 1, 1, 1]))
    meta = {}
    plain = objectives.ClassificationTask(data, None, ["fruit", "stone"], tok, run_config.FinetuneOptions(), meta)
    weighted = objectives.ClassificationTask(data, None, ["fruit", "stone"], tok,
                                     run_config.FinetuneOptions(class_weights="balanced"), meta)
    w = labelled.balanced_weights([1, 3])
    np.testing.assert_allclose(w, [2.0, 2 / 3])  # n / (K * n_c), as scikit-learn
    model = ft.build_model(LanistrForSequenceClassification, "scratch", {"preset": "tiny"}, tok,
                           ["fruit", "stone"], 16).eval()
    batch = weighted.collate([0, 1, 2, 3], 0)
    assert plain.counts(batch) == {"loss": 4.0}
    assert weighted.counts(batch) == {"loss": pytest.approx(2.0 + 3 * 2 / 3)}
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
    y = batch["labels"]
    per = F.cross_entropy(logits, y, reduction="none")
    expected = float((torch.tensor(w, dtype=torch.float32)[y] * per).sum())
    with torch.no_grad():
        weighted_sum = float(weighted.loss_sums(model, batch)["loss"])
        plain_sum = float(plain.loss_sums(model, batch)["loss"])
    assert weighted_sum == pytest.approx(expected, rel=1e-5)
    assert plain_sum == pytest.approx(float(per.sum()), rel=1e-5)
    # sum / count is PyTorch's weighted mean
    mean = F.cross_entropy(logits, y, weight=torch.tensor(w, dtype=torch.float32))
    ratio = weighted_sum / weighted.counts(batch)["loss"]
    assert ratio == pytest.approx(float(mean), rel=1e-5)


def test_train_defaults_fill_only_what_the_config_leaves_out(toy):
    from lanistr.tasks.run_config import parse_run

    raw = {"init": "scratch", "model": {"preset": "tiny"},
           "data": {"train": str(toy["train"]), "tokenizer": str(toy["tok"]), "max_len": 32}}
    run = parse_run("finetune", {**raw, "train": {"lr": 1e-3}})
    assert run.train.lr == 1e-3 and run.train.epochs == 3.0 and run.train.max_steps == 0
    assert run.train.batch_size == 16 and run.eval_every_epoch
    assert parse_run("finetune", raw).train.lr == run_config.LR_SCRATCH
    assert "eval_every_epoch" not in run.to_dict()  # derived, not a config section
    again = parse_run("finetune", run.to_dict())  # what run_config.yaml holds reads back
    assert again.train == run.train and again.data == run.data
    # a run that gives epochs is not cut by a step cap it never set (the loop's default,
    # 1,000 steps, holds for pretraining and distillation)
    pretrain = {"model": {"preset": "tiny"}, "data": {"train": [str(toy["train"])],
                                                      "max_len": 32}}
    assert parse_run("pretrain", pretrain).train.max_steps == 1000
    assert parse_run("pretrain", {**pretrain, "train": {"epochs": 3}}).train.max_steps == 0
    assert parse_run("pretrain", {**pretrain, "train": {"epochs": 3, "max_steps": 50}}
                     ).train.max_steps == 50
    # pretraining's own defaults: its step size, and for the default model (no preset named)
    # pre-norm blocks without dropout; a named preset keeps its layout
    default_model = parse_run("pretrain", {**pretrain, "model": {}})
    assert (default_model.train.lr, default_model.train.warmup_ratio, default_model.train.batch_size
            ) == (1e-3, 0.06, 16)
    assert default_model.model == {"norm": "pre", "dropout": 0.0, "attention_dropout": 0.0}
    assert parse_run("pretrain", {**pretrain, "model": {"norm": "post"}}).model["norm"] == "post"
    assert parse_run("pretrain", pretrain).model == {"preset": "tiny"}
    # a pretraining time budget given alone drives the schedule (lr 0 at the budget)
    budget = parse_run("pretrain", {**pretrain, "train": {"max_minutes": 60}}).train
    assert (budget.max_steps, budget.schedule_by, budget.max_minutes) == (0, "time", 60.0)
    capped = parse_run("pretrain", {**pretrain, "train": {"max_minutes": 60, "max_steps": 9}})
    assert (capped.train.max_steps, capped.train.schedule_by) == (9, "steps")


# --------------------------------------------------------------------------- loop integration


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_interrupted_finetune_resumes_bitwise(toy, tmp_path, monkeypatch, head_init):
    """Also with the head warm-up (lanistr.tasks.head_probe), which the resumed run skips:
    the checkpoint holds the head it had reached."""
    import os
    import signal

    from lanistr.config import apply_overrides

    sets = toy_sets(toy, **{"train.max_steps": 8, "train.epochs": 0, "train.save_every": 100,
                            "model.dropout": 0.1, "finetune.head_init": head_init})
    run = apply_overrides({}, sets[1::2])
    ft.finetune(run, tmp_path / "straight")
    probed = "fitted to the pretrained features" in (tmp_path / "straight" / "train.log").read_text()
    assert probed == (head_init == "probe")
    assert f"head_init: {head_init}" in (tmp_path / "straight" / "run_config.yaml").read_text()
    original, calls = objectives.ClassificationTask.collate, {"n": 0}

    def collate(self, indices, epoch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, indices, epoch)

    with monkeypatch.context() as m:
        m.setattr(objectives.ClassificationTask, "collate", collate)
        with pytest.raises(KeyboardInterrupt):
            ft.finetune(run, tmp_path / "split")
    ft.finetune(run, tmp_path / "split", resume=True)
    a, b = read_weights(tmp_path / "straight" / "model"), read_weights(tmp_path / "split" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_length_grouped_accumulation_equals_a_bigger_batch(toy, tmp_path):
    """Grouping by length batches a global batch's examples together: 2 accumulated
    micro-batches of 4 train exactly as one batch of 8."""
    from lanistr.config import apply_overrides

    common = {"train.max_steps": 6, "train.epochs": 0, "train.precision": "fp32",
              "train.eval_every": 0, "train.group_by_length": "true"}
    runs = {"acc": {"train.batch_size": 4, "train.grad_accum": 2}, "big": {}}
    for name, extra in runs.items():
        sets = toy_sets(toy, **common, **extra)
        ft.finetune(apply_overrides({}, sets[1::2]), tmp_path / name)
    log = (tmp_path / "big" / "train.log").read_text(encoding="utf-8")
    assert "batches grouped by length (train.group_by_length)" in log
    acc, big = read_metric(tmp_path / "acc", "loss"), read_metric(tmp_path / "big", "loss")
    assert len(acc) == 6 and max(abs(x - y) for x, y in zip(acc, big)) < 1e-5
    a, b = read_weights(tmp_path / "acc" / "model"), read_weights(tmp_path / "big" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)


class _FixedTagger(torch.nn.Module):
    """Predicts given tag ids for every token (logits one-hot), whatever the input."""

    def __init__(self, pred: torch.Tensor, k: int):
        super().__init__()
        self.logits = F.one_hot(pred.clamp_min(0), k).float()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return type("Out", (), {"logits": self.logits[:, :input_ids.shape[1]]})()


def test_bio_entity_f1_in_the_loop_equals_seqeval(toy):
    seqeval = pytest.importorskip("seqeval.metrics")
    labels = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    tok = Tokenizer.from_pretrained(toy["tok"])
    words = [["plum", "lemonade", "rock", "sand"], ["iron", "apple", "mango"]]
    batch = tok.encode_words(words, max_length=32)
    targets, guesses = [], []
    for b in range(2):
        ids = [labels.index(t) for t in gold[b]]
        targets.append(labelled.first_piece_targets(batch.word_ids[b], ids))
        guess = labelled.first_piece_targets(batch.word_ids[b], [labels.index(t) for t in pred[b]])
        guesses.append(torch.from_numpy(guess))
    data = labelled.Encoded("x", [1, 6], [batch.input_ids[b][batch.attention_mask[b] > 0].numpy()
                                    for b in range(2)], None, targets)
    task = objectives.TaggingTask(data, data, labels, tok, run_config.FinetuneOptions(), {})
    assert task.best_metric == "entity_f1"
    width = batch.input_ids.shape[1]
    model = _FixedTagger(torch.stack([F.pad(g, (0, width - len(g)), value=-100)
                                      for g in guesses]), len(labels))
    sums = task.eval_sums(model, task.make_batch(data, [0, 1]))
    metrics = task.finalize_metrics(sums)
    assert metrics["entity_f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert metrics["token_accuracy"] == pytest.approx(6 / 7)


def test_evaluate_and_predict_a_tagger_from_conll(tagger, toy, tmp_path, capsys):
    out = tmp_path / "tag.json"
    assert main(["evaluate", "--model", str(tagger), "--data", str(toy["conll"]),
                 "--output", str(out), "--no-progress"]) == 0
    m = json.loads(out.read_text())
    assert m["task"] == "tag" and m["token_accuracy"] == 1.0 and "entity_f1" not in m
    assert not list(tmp_path.glob("*.png"))  # a confusion matrix only for classifiers
    pred = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", str(tagger), "--input", str(toy["conll"]),
                 "--output", str(pred)]) == 0
    rows = [json.loads(x) for x in pred.read_text().splitlines()]
    assert len(rows) == 40 and all(len(r["words"]) == len(r["tags"]) for r in rows)


# --------------------------------------------------------------------------- windows


def test_windows_classify_short_texts_like_truncation(classifier):
    """A text that fits in max_len is one window: the same probabilities either way."""
    texts = ["apple banana cherry", "rock stone", ""]
    plain, _ = predict.Predictor(classifier).classify(texts)
    windowed, cut = predict.Predictor(classifier, windows=True).classify(texts)
    np.testing.assert_allclose(windowed, plain, atol=1e-6)
    assert cut == 0


def test_windows_average_the_logits_of_every_window(classifier):
    """A long text: softmax of the mean logits of its [CLS] window [SEP] pieces, `stride`
    tokens apart, the last window aligned to the end (nothing dropped)."""
    predictor = predict.Predictor(classifier, windows=True, stride=10)
    text = " ".join(["apple"] * 25 + ["rock"] * 40)
    ids = predictor.tokenizer.encode_documents([text])[0][0].tolist()
    body = predictor.max_len - 2
    assert len(ids) > body
    starts = [*range(0, len(ids) - body, 10), len(ids) - body]
    cls_, sep = predictor.tokenizer.cls_id, predictor.tokenizer.sep_id
    with torch.no_grad():
        logits = torch.cat([predictor.model(torch.tensor([[cls_, *ids[s:s + body], sep]])).logits
                            for s in starts])
    expected = torch.softmax(logits.double().mean(0), -1).numpy()
    probs, _ = predictor.classify([text, "plum"], batch_size=3)
    np.testing.assert_allclose(probs[0], expected, atol=1e-6)
    # the stone-heavy tail decides it; truncation only sees the fruit head
    assert predictor.labels[int(probs[0].argmax())] == "stone"
    head, _ = predict.Predictor(classifier).classify([" ".join(["apple"] * 30 + ["rock"] * 80)])
    assert predictor.labels[int(head[0].argmax())] == "fruit"


def test_windows_cli_and_bad_stride(classifier, tmp_path, capsys):
    assert main(["predict", "--model", str(classifier), "--windows", "--stride", "8",
                 "rock " * 100]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["label"] == "stone"
    for bad in ("500", "0"):
        assert main(["predict", "--model", str(classifier), "--windows", "--stride", bad,
                     "rock"]) != 0
        assert "stride must be between 1 and max_len - 2" in capsys.readouterr().err
