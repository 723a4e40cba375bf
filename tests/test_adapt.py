"""Domain adaptation: gradient reversal, DAPT (resume, vocabulary extension), domain probe,
DANN, freezing and gradual unfreezing."""

import json
import math
import os
import random
import signal

import numpy as np
import pytest
import torch
from tests.helpers import WORDS, read_metric, write_corpus

from lanistr.checkpoint import read_config, read_weights
from lanistr.cli import main
from lanistr.config import LanistrConfig, apply_overrides
from lanistr.data.tokenizer import Tokenizer, train_tokenizer
from lanistr.nn import LanistrForMaskedLM
from lanistr.nn.domain import (
    DomainHead,
    LanistrForDomainClassification,
    LanistrForSequenceClassificationWithDomainHead,
    dann_lambda,
    grad_reverse,
    with_domain_head,
)
from lanistr.nn.models import LanistrForSequenceClassification
from lanistr.tasks import adapt as adapt_mod
from lanistr.tasks import pretrain as pretrain_mod

# --------------------------------------------------------------------------- fixtures

DOMAIN_WORDS = ("pitcher inning hockey goalie puck batter stadium playoff season "
                "shortstop").split()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared, busy 2-core machine a tiny model's backward pass is
    ~50x slower with 2 OpenMP threads than with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """A tiny MLM checkpoint with its own trained tokenizer (read-only for the tests)."""
    tmp = tmp_path_factory.mktemp("init")
    corpus = write_corpus(tmp / "general.txt", docs=30)
    out = tmp / "init"
    tok = train_tokenizer(corpus, 120, out)
    config = LanistrConfig.from_any({"preset": "tiny", "vocab_size": tok.vocab_size,
                                     "max_len": 32, "pad_token_id": tok.pad_id})
    torch.manual_seed(0)
    LanistrForMaskedLM(config).save_pretrained(out)
    return out


def write_domain_text(path, words, docs=30, seed=0):
    rng = random.Random(seed)
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
                                for _ in range(docs)) + "\n", encoding="utf-8")
    return path


def write_labelled(path, n, seed, extra=()):
    """JSONL: label a = words of the first half of WORDS, b = of the second half; ``extra``
    words (a domain's vocabulary) are mixed into every text."""
    rng = random.Random(seed)
    half = len(WORDS) // 2
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            label = "ab"[i % 2]
            pool = list(WORDS[:half] if label == "a" else WORDS[half:]) + list(extra)
            text = " ".join(rng.choice(pool) for _ in range(rng.randint(4, 10)))
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def dann_sets(tmp, init, **train):
    source = write_labelled(tmp / "source.jsonl", 40, 0)
    target = write_labelled(tmp / "target.jsonl", 30, 1, extra=DOMAIN_WORDS)
    test = write_labelled(tmp / "target_test.jsonl", 16, 2, extra=DOMAIN_WORDS)
    sets = [f"init={init}", f"data.train={source}", f"data.test={test}", "data.max_len=32",
            f"dann.target={target}", "train.batch_size=4", "train.lr=1e-3",
            "train.progress=false", "train.max_steps=6", "train.epochs=0", "train.eval_every=0",
            "train.save_every=100", "model.dropout=0.1"]
    return sets + [f"train.{k}={v}" for k, v in train.items()]


def _interrupt_at(monkeypatch, cls, step_to_interrupt):
    """A real SIGINT while the given step's batch is being made (the Ctrl-C path)."""
    original = cls.collate
    calls = {"n": 0}

    def collate(self, indices, epoch):
        calls["n"] += 1
        if calls["n"] == step_to_interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, indices, epoch)

    monkeypatch.setattr(cls, "collate", collate)


def _same_weights(a_dir, b_dir):
    a, b = read_weights(a_dir), read_weights(b_dir)
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0, 2.5])
def test_gradient_reversal_is_identity_forward_and_minus_lambda_grad_backward(lam):
    x = torch.randn(4, 6, requires_grad=True)
    upstream = torch.randn(4, 6)
    y = grad_reverse(x, lam)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -lam * upstream)


def test_domain_head_reverses_only_the_gradient_below_it(tiny_config):
    head = DomainHead(tiny_config, 2, hidden=16)
    feats = torch.randn(5, tiny_config.hidden_size)
    y = torch.tensor([0, 1, 0, 1, 1])
    grads = {}
    for lam in (None, 0.5):
        f = feats.clone().requires_grad_(True)
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(f, lam), y).backward()
        grads[lam] = (f.grad, [p.grad.clone() for p in head.parameters()])
    assert torch.equal(grads[0.5][0], -0.5 * grads[None][0])  # the encoder side: reversed
    for a, b in zip(grads[0.5][1], grads[None][1]):  # the head itself: unchanged
        assert torch.equal(a, b)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.3) == pytest.approx(2 / (1 + math.exp(-3)) - 1)
    assert dann_lambda(1.0, max_lambda=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert dann_lambda(2.0) == dann_lambda(1.0)  # progress is clipped to [0, 1]


def test_domain_head_variant_is_registered_and_loads_back_as_the_task_model(tmp_path, tiny_config):
    assert with_domain_head(LanistrForSequenceClassification) is \
        LanistrForSequenceClassificationWithDomainHead
    tiny_config.labels = ["a", "b"]
    model = LanistrForSequenceClassificationWithDomainHead(tiny_config).eval()
    model.save_pretrained(tmp_path / "m")
    from lanistr.nn import load_model

    again = load_model(tmp_path / "m").eval()
    plain = LanistrForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(5, 99, (2, 7))
    out = again(ids, grl_lambda=1.0)
    assert out.domain_logits.shape == (2, 2)
    assert torch.equal(out.logits, plain(ids).logits)
    assert torch.equal(out.logits, model(ids).logits)


# --------------------------------------------------------------------------- vocabulary extension


def test_vocab_extension_rows_are_the_mean_of_the_old_pieces(tmp_path, init):
    tok = Tokenizer.from_pretrained(init)
    model = LanistrForMaskedLM.from_pretrained(init)
    domain = write_domain_text(tmp_path / "domain.txt", DOMAIN_WORDS + WORDS[:5])
    found = adapt_mod.frequent_new_words([domain], tok, 4)
    words = [w for w, _ in found]
    assert len(words) == 4 and all(w in DOMAIN_WORDS for w in words)
    counts = [c for _, c in found]
    assert counts == sorted(counts, reverse=True)

    new_model, new_tok = adapt_mod.extend_vocabulary(model, tok, words)
    assert new_tok.vocab_size == tok.vocab_size + 4
    assert new_model.config.vocab_size == model.config.vocab_size + 4
    old_emb = model.model.token_embedding.weight
    new_emb = new_model.model.token_embedding.weight
    assert torch.equal(new_emb[:tok.vocab_size], old_emb)
    for i, w in enumerate(words):
        pieces = tok.convert_tokens_to_ids(tok.tokenize(w))
        assert len(pieces) > 1
        assert new_tok.tokenize(w) == [w] and new_tok.convert_tokens_to_ids(w) == tok.vocab_size + i
        assert torch.equal(new_emb[tok.vocab_size + i], old_emb[pieces].mean(0))
        assert torch.equal(new_model.mlm_head.bias[tok.vocab_size + i],
                           model.mlm_head.bias[pieces].mean(0))
    # the MLM decoder stays tied to the (grown) embedding
    assert new_model.mlm_head.embedding[0].weight is new_emb
    # text without the new words is tokenised as before
    text = " ".join(WORDS[:8])
    assert new_tok.encode([text]).input_ids.tolist() == tok.encode([text]).input_ids.tolist()


def test_vocab_extension_reuses_padded_rows_before_growing(init):
    tok = Tokenizer.from_pretrained(init)
    config = read_config(init, vocab_size=tok.vocab_size + 2)
    model = LanistrForMaskedLM(config)
    new_model, new_tok = adapt_mod.extend_vocabulary(model, tok, ["pitcher", "hockey", "puck"])
    assert new_model.config.vocab_size == tok.vocab_size + 3
    emb = new_model.model.token_embedding.weight
    pieces = tok.convert_tokens_to_ids(tok.tokenize("hockey"))
    assert torch.equal(emb[tok.vocab_size + 1], model.model.token_embedding.weight[pieces].mean(0))


# --------------------------------------------------------------------------- DAPT


def dapt_run(tmp, init, **train):
    domain = write_domain_text(tmp / "domain.txt", DOMAIN_WORDS + WORDS, docs=40)
    sets = [f"init={init}", f"data.train=[{domain}]", "data.max_len=24", "train.lr=2e-3",
            "train.progress=false", "train.eval_every=0", "train.batch_size=4",
            "train.save_every=100", "adapt.extend_vocab=5", f"data.cache_dir={tmp / 'cache'}"]
    return apply_overrides({}, sets + [f"train.{k}={v}" for k, v in train.items()])


def test_dapt_cli_extends_the_vocabulary_and_trains_from_the_checkpoint(tmp_path, init):
    domain = write_domain_text(tmp_path / "domain.txt", DOMAIN_WORDS + WORDS, docs=40)
    out = tmp_path / "dapt"
    assert main(["adapt", "dapt", "--init", str(init), "--corpus", str(domain),
                 "--extend-vocab", "6", "--output", str(out), "--set", "train.max_steps=8",
                 "--set", "train.batch_size=4", "--set", "data.max_len=24",
                 "--set", "train.progress=false", "--set", "train.lr=2e-3"]) == 0
    added = json.loads((out / "init" / "added_words.json").read_text())
    assert len(added) == 6
    tok = Tokenizer.from_pretrained(out / "model")
    base = Tokenizer.from_pretrained(init)
    assert tok.vocab_size == base.vocab_size + 6
    assert read_config(out / "model").vocab_size == tok.vocab_size
    # started from the init checkpoint, not from scratch: untouched rows moved only a little
    a = read_weights(init)["model.encoder.embeddings.position.weight"]
    b = read_weights(out / "model")["model.encoder.embeddings.position.weight"]
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.1
    assert len(read_metric(out, "loss")) == 8


def test_dapt_interrupt_then_resume_is_bitwise_identical(tmp_path, monkeypatch, init):
    run = dapt_run(tmp_path, init, max_steps=7)
    adapt_mod.dapt(run, tmp_path / "straight")
    with monkeypatch.context() as m:
        _interrupt_at(m, pretrain_mod.MLMTask, 3)
        with pytest.raises(KeyboardInterrupt):
            adapt_mod.dapt(run, tmp_path / "split")
    assert (tmp_path / "split" / "checkpoints" / "step-0000003").is_dir()
    adapt_mod.dapt(run, tmp_path / "split", resume=True)
    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    assert len(read_metric(tmp_path / "split", "loss")) == 7
    assert _same_weights(tmp_path / "straight" / "model", tmp_path / "split" / "model")


def test_dapt_unfreeze_every_trains_the_mlm_head_first(tmp_path, init):
    """adapt.unfreeze_every=N: for N steps only the MLM head moves (the encoder, and the
    embeddings the head's decoder may share, stay bitwise); after 2N steps the top layer
    has moved too, the bottom layer and the embeddings still have not (tiny: 2 layers)."""
    def changed_after(steps):
        run = dapt_run(tmp_path, init, max_steps=steps, weight_decay=0.1)
        run["adapt"] = {"unfreeze_every": 3}
        out = tmp_path / f"dapt-{steps}"
        adapt_mod.dapt(run, out)
        before, after = read_weights(init), read_weights(out / "model")
        return _changed({k: before[k] for k in after if k in before}, after)

    head_only = changed_after(3)
    assert head_only and not any(k.startswith("model.") for k in head_only)
    top = changed_after(5)
    assert any(".layers.1." in k for k in top)
    assert not any(".layers.0." in k or ".embeddings." in k for k in top)


def test_dapt_needs_an_init_checkpoint(tmp_path, capsys):
    domain = write_domain_text(tmp_path / "d.txt", DOMAIN_WORDS)
    assert main(["adapt", "dapt", "--corpus", str(domain), "--output", str(tmp_path / "o")]) == 2
    assert "init" in capsys.readouterr().err


# --------------------------------------------------------------------------- domain probe


def test_domain_probe_separates_different_corpora_and_not_identical_ones(tmp_path, capsys, init):
    a = write_domain_text(tmp_path / "a.txt", WORDS[:12], docs=60, seed=1)
    b = write_domain_text(tmp_path / "b.txt", DOMAIN_WORDS, docs=60, seed=2)
    a2 = write_domain_text(tmp_path / "a2.txt", WORDS[:12], docs=60, seed=3)
    far = adapt_mod.domain_probe(init, a, b, test_fraction=0.5, save=tmp_path / "probe")
    near = adapt_mod.domain_probe(init, a, a2, test_fraction=0.5)
    assert far["accuracy"] == 1.0 and far["test_per_domain"] == 30
    assert near["accuracy"] < 0.8
    # the saved probe (standardisation folded into the head) classifies like the fitted one
    probe = LanistrForDomainClassification.from_pretrained(tmp_path / "probe").eval()
    tok = Tokenizer.from_pretrained(tmp_path / "probe")
    texts = adapt_mod.read_domain_texts(a)[:5] + adapt_mod.read_domain_texts(b)[:5]
    batch = tok.encode(texts, max_length=32, padding=True, truncation=True)
    with torch.no_grad():
        pred = probe(batch.input_ids, batch.attention_mask).logits.argmax(-1)
    assert pred.tolist() == [0] * 5 + [1] * 5
    assert main(["adapt", "domain-probe", "--model", str(init), "--source", str(a), "--target",
                 str(b), "--json", str(tmp_path / "p.json")]) == 0
    assert "held-out accuracy 1.0000" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["accuracy"] == 1.0


def test_logistic_regression_reaches_the_regularised_optimum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=g, dtype=torch.float64).numpy()
    y = (x[:, 0] + 0.5 * torch.randn(80, generator=g, dtype=torch.float64).numpy() > 0)
    l2 = 0.05
    w, b = adapt_mod.fit_logistic_regression(x, y, l2)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    # the objective is strictly convex: a zero gradient means the unique minimum
    assert np.abs(x.T @ (p - y) / 80 + l2 * w).max() < 1e-9
    assert abs(np.mean(p - y)) < 1e-9  # the bias is not penalised


# --------------------------------------------------------------------------- DANN


def test_dann_runs_on_a_toy_set_and_computes_the_domain_loss(tmp_path, capsys, init):
    args = ["adapt", "dann", "--output", str(tmp_path / "run")]
    for s in dann_sets(tmp_path, init):
        args += ["--set", s]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "target test" in out and "30 unlabelled target examples" in out
    model_dir = tmp_path / "run" / "model"
    assert read_config(model_dir).architecture == "LanistrForSequenceClassification"
    assert not any(k.startswith("domain_head.") for k in read_weights(model_dir))
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000006"
    assert any(k.startswith("domain_head.") for k in read_weights(ckpt))
    assert "domain head accuracy on training pairs" in out
    domain = json.loads((tmp_path / "run" / "domain_metrics.json").read_text())
    assert 0.0 <= domain["domain_accuracy"] <= 1.0
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    with torch.enable_grad():  # `lanistr evaluate` switches autograd off for the process
        assert main(["evaluate", "--model", str(model_dir), "--data",
                     str(tmp_path / "target_test.jsonl")]) == 0


def _toy_task(tmp_path, init, **dann):
    """A DANN task and model built the way `dann` builds them (no training)."""
    from lanistr.config import from_dict
    from lanistr.distributed import DistContext
    from lanistr.tasks.finetune import TASKS, Setup
    from lanistr.tasks.run_config import parse_run

    raw = apply_overrides({}, dann_sets(tmp_path, init))
    run = parse_run("dann", {**raw, "train": {"batch_size": 4}})
    opts = from_dict(adapt_mod.DannOptions, {**raw["dann"], **dann}, "dann")
    data = run.data
    tok = Tokenizer.from_pretrained(init)
    base_model, base_task = TASKS["classify"](Setup(run, tok, DistContext()))
    model = adapt_mod.domain_adversarial_model(base_model)
    target = adapt_mod.encode_target("classify", opts.target, data, tok, 0, 0)
    return model, adapt_mod.DomainAdversarialTask(base_task, target, opts, 0)


def test_dann_batches_pair_source_and_target_and_the_domain_loss_reverses(tmp_path, init):
    model, task = _toy_task(tmp_path, init, domain_weight=0.7)
    batch = task.collate([0, 5, 7], epoch=2)
    assert batch["input_ids"].shape[0] == 6
    assert batch["labels"][:3].ge(0).all() and batch["labels"][3:].eq(-100).all()
    assert batch["domain_labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert task.counts(batch) == {"loss": 3.0, "domain": 6.0}
    # partners are a pure function of (indices, epoch)
    assert task.target_partners([0, 5, 7], 2) == task.target_partners([0, 5, 7], 2)
    assert task.target_partners(range(30), 0) != task.target_partners(range(30), 1)

    task.on_step(5, 10)
    assert task.grl_lambda == pytest.approx(dann_lambda(0.5))
    model.eval()  # no dropout: both passes see the same function
    sums = task.loss_sums(model, batch)
    assert set(sums) == {"loss", "domain"}
    assert 0.3 * 6 < float(sums["domain"].detach()) / 0.7 < 1.2 * 6  # about ln 2 per row at the start
    # the encoder gets minus lambda times the gradient of the (unreversed) domain loss
    layer = model.model.encoder.layers[-1].ffn.fc2.weight
    (g_rev,) = torch.autograd.grad(sums["domain"], layer)
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                grl_lambda=-1.0)  # -1: reversal cancelled, plain gradient
    plain = 0.7 * torch.nn.functional.cross_entropy(out.domain_logits, batch["domain_labels"],
                                                    reduction="sum")
    (g_plain,) = torch.autograd.grad(plain, layer)
    torch.testing.assert_close(g_rev, -task.grl_lambda * g_plain, rtol=1e-5, atol=1e-8)


def test_dann_domain_head_trains_at_a_scaled_learning_rate(tmp_path, init):
    from lanistr.config import TrainConfig

    model, task = _toy_task(tmp_path, init, domain_lr_scale=7.0)
    train = TrainConfig(lr=1e-4, weight_decay=0.01)
    groups = task.param_groups(model, train)
    head = {id(p) for p in model.domain_head.parameters()}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each once
    for g in groups:
        in_head = {id(p) in head for p in g["params"]}
        assert len(in_head) == 1
        if in_head == {True}:
            assert g["lr"] == pytest.approx(7e-4)
        else:
            assert g.get("lr", train.lr) == train.lr


def test_dann_interrupt_then_resume_is_bitwise_identical(tmp_path, monkeypatch, init):
    run = apply_overrides({}, dann_sets(tmp_path, init, max_steps=7))
    run["dann"]["unfreeze_every"] = 2
    del run["data"]["test"]
    adapt_mod.dann(run, tmp_path / "straight")
    with monkeypatch.context() as m:
        _interrupt_at(m, adapt_mod.DomainAdversarialTask, 4)
        with pytest.raises(KeyboardInterrupt):
            adapt_mod.dann(run, tmp_path / "split")
    adapt_mod.dann(run, tmp_path / "split", resume=True)
    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    assert _same_weights(tmp_path / "straight" / "model", tmp_path / "split" / "model")


# --------------------------------------------------------------------------- freezing


def _changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_frozen_layers_do_not_change_bitwise(tmp_path, init):
    run = apply_overrides({}, dann_sets(tmp_path, init) + ["finetune.freeze_layers=1",
                                                           "train.weight_decay=0.1"])
    adapt_mod.dann(run, tmp_path / "run")
    before = read_weights(init)
    after = read_weights(tmp_path / "run" / "model")
    changed = _changed({k: before[k] for k in after if k in before}, after)
    assert not any(".embeddings." in k or ".layers.0." in k for k in changed)
    assert any(".layers.1." in k for k in changed)


def test_gradual_unfreezing_opens_layers_from_the_top(tmp_path, init):
    # tiny has 2 layers; one more every 3 steps: steps 0-2 heads, 3-5 + layers.1
    run = apply_overrides({}, dann_sets(tmp_path, init) + ["dann.unfreeze_every=3",
                                                           "train.weight_decay=0.1"])
    adapt_mod.dann(run, tmp_path / "run")
    before = read_weights(init)
    after = read_weights(tmp_path / "run" / "model")
    changed = _changed({k: before[k] for k in after if k in before}, after)
    assert not any(".embeddings." in k or ".layers.0." in k for k in changed)
    assert any(".layers.1." in k for k in changed)

    (tmp_path / "t").mkdir()
    model, task = _toy_task(tmp_path / "t", init)
    sched = adapt_mod.GradualUnfreezing(model, 3)
    sched.apply(0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("classifier.", "domain_head.", "model.pooler."))
                             for n in trainable)
    sched.apply(9)
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- cross-domain splits


def test_cross_domain_splits_keep_target_labels_out_of_training(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "make_domain_splits", Path(__file__).resolve().parents[1] / "scripts" / "make_domain_splits.py")
    splits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(splits)

    news = tmp_path / "20ng"
    news.mkdir()
    groups = [g for t in splits.NEWSGROUP_TASKS.values() for d in ("source", "target") for g in t[d]]
    for part, n in (("train", 6), ("test", 4)):
        with (news / f"{part}.jsonl").open("w") as fh:
            for g in groups:
                for i in range(n):
                    fh.write(json.dumps({"text": f"{part} {g} text {i}", "label": g}) + "\n")
    info = splits.newsgroup_split("comp_rec", news, tmp_path / "cr", 3, 2)
    assert info["counts"] == {"source_train": 12, "target_unlabelled": 12, "target_test": 8,
                              "source_test": 8}
    rows = {k: [json.loads(x) for x in (tmp_path / "cr" / f"{k}.jsonl").read_text().splitlines()]
            for k in info["counts"]}
    assert all("label" not in r for r in rows["target_unlabelled"])
    assert {r["label"] for r in rows["source_train"]} == {"comp", "rec"}
    spec_cr = splits.NEWSGROUP_TASKS["comp_rec"]
    assert {r["group"] for r in rows["target_test"]} == set(spec_cr["target"])
    assert all(r["text"].startswith("train") for r in rows["target_unlabelled"])
    assert all(r["text"].startswith("test") for r in rows["target_test"])

    brown = tmp_path / "brown" / "genres"
    brown.mkdir(parents=True)
    for genre in splits.BROWN_SOURCE + splits.BROWN_TARGET:
        docs = [f"# doc: {genre}{d} genre: {genre}\n" + "".join(
            f"{genre}{d}w{s}\tNOUN\nran\tVERB\n\n" for s in range(3)) for d in range(4)]
        (brown / f"{genre}.conll").write_text("".join(docs))
    info = splits.brown_split(tmp_path / "brown", tmp_path / "b", 0, 0)
    from lanistr.data.readers import read_conll

    read = {k: read_conll(tmp_path / "b" / f"{k}.conll") for k in info["counts"]}
    assert all(set(s.tags) == {"_"} for s in read["target_unlabelled"])
    docs = {k: {s.words[0].rsplit("w", 1)[0] for s in v} for k, v in read.items()}
    assert not docs["target_unlabelled"] & docs["target_test"]  # split by document
    assert not docs["source_train"] & docs["source_test"]
    assert all(d.startswith(tuple(splits.BROWN_TARGET)) for d in docs["target_test"])
