"""`lanistr distill`: MiniLM relations, hidden states and soft targets on the one training loop
(tiny models, seconds): a student identical to its teacher has zero loss, a few steps lower
it, a run resumes bitwise, and bad input is a one-line error."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from tests.helpers import read_metric, write_corpus

from lanistr.checkpoint import read_weights
from lanistr.cli import main
from lanistr.nn import LanistrForSequenceClassification, LanistrModel, load_model
from lanistr.tasks import distill as distill_mod
from lanistr.tasks.run_config import parse_run

WORDS = {"spam": "win free prize money click now offer cash".split(),
         "ham": "meeting tomorrow agenda report budget team notes lunch".split()}


def cli(*argv, sets=()):
    return main([*argv, *[a for s in sets for a in ("--set", s)]])


def labelled(path, n=24, seed=0):
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "spam" if i % 2 else "ham"
        rows.append({"text": " ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(4, 9))),
                     "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny pretrained encoder (MLM) and a classifier fine-tuned from it."""
    root = tmp_path_factory.mktemp("teachers")
    corpus = write_corpus(root / "corpus.txt", docs=30)
    labelled(root / "train.jsonl")
    base = ["model.preset=tiny", "model.max_len=32", "train.progress=false", "train.lr=2e-3"]
    assert cli("pretrain", "--output", str(root / "mlm"), sets=[
        *base, f"data.train=[{corpus}]", "data.vocab_size=150", "data.max_len=24",
        "train.max_steps=4", "train.batch_size=4", "train.eval_every=0"]) == 0
    assert cli("finetune", "--output", str(root / "clf"), sets=[
        f"init={root / 'mlm' / 'model'}", f"data.train={root / 'train.jsonl'}",
        "data.max_len=24", "finetune.recipe='off'", "train.max_steps=6", "train.batch_size=4",
        "train.progress=false", "train.eval_every=0"]) == 0
    return {"root": root, "mlm": root / "mlm" / "model", "clf": root / "clf" / "model",
            "corpus": corpus, "train": root / "train.jsonl"}


def general_sets(t, tmp, *extra):
    held = write_corpus(tmp / "held.txt", docs=6, seed=3)
    return [f"distill.teacher={t['mlm']}", f"data.train={t['corpus']}", f"data.eval={held}",
            "data.max_len=24", "model.preset=tiny", "model.num_layers=1", "model.max_len=32",
            "train.max_steps=8", "train.batch_size=4", "train.lr=3e-3", "train.eval_every=4",
            "train.progress=false", *extra]


# --------------------------------------------------------------------------- the losses


def _copy_task(teacher_dir, mode, **weights):
    """A student that is an exact copy of the teacher, and the task that compares them."""
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.tasks.labelled import encode_texts, pad_batch

    teacher = load_model(teacher_dir)
    cls = LanistrForSequenceClassification if mode == "task" else LanistrModel
    student = cls.from_pretrained(teacher_dir)
    run = parse_run("distill", {"init": str(teacher_dir), "data": {"train": str(teacher_dir /
                                "config.json"), "max_len": 24},
                                "distill": {"teacher": str(teacher_dir), "mode": mode, **weights}})
    model = distill_mod.DistillStudent(student, teacher.config.hidden_size, run.distill).train()
    tok = Tokenizer.from_pretrained(teacher_dir)
    ids = encode_texts(tok, ["win free money now",
                             "the meeting agenda is on the team notes tomorrow"], None, 24)[0]
    batch = pad_batch(ids, tok.pad_id)  # padded: the second row is longer
    heads = distill_mod.relation_heads(run.distill, teacher.config, student.config)
    task = distill_mod.DistillTask(teacher, run.distill, heads, tok, ids)
    batch["labels"] = torch.tensor([1, 0])
    return task, model, batch


@pytest.mark.parametrize("weights", [
    {"attention_weight": 1.0, "value_weight": 0.0},
    {"attention_weight": 0.0, "value_weight": 1.0},
    {"attention_weight": 0.0, "value_weight": 0.0, "hidden_weight": 1.0},
    {"attention_weight": 1.0, "value_weight": 1.0, "relation_heads": 2},
], ids=["attention", "value", "hidden", "relation-heads"])
def test_a_copy_of_the_teacher_has_zero_general_loss(teachers, weights):
    task, model, batch = _copy_task(teachers["mlm"], "general", **weights)  # tiny: dropout 0.0
    sums = task.loss_sums(model, batch)
    assert sums and all(float(v.detach()) == 0.0 for v in sums.values()), sums
    # and a different student does not
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert all(float(v.detach()) > 1e-6 for v in task.loss_sums(model, batch).values())


def test_a_copy_of_the_teacher_classifier_has_zero_soft_target_loss(teachers):
    task, model, batch = _copy_task(teachers["clf"], "task")
    sums = task.loss_sums(model, batch)
    assert set(sums) == {"soft"} and float(sums["soft"]) == 0.0


def test_cached_teacher_logits_give_the_recomputed_loss_and_gradients(teachers):
    task, model, batch = _copy_task(teachers["clf"], "task", hard_weight=0.5)
    task.labels = batch["labels"].numpy()
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()  # the same student forward both times

    def loss_and_grads(b):
        model.zero_grad()
        sums = task.loss_sums(model, b)
        sum(sums.values()).backward()
        return sums, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert task.logits_only
    recomputed, g1 = loss_and_grads(batch)
    task.eval_set, task.eval_labels = task.train, task.labels  # held-out: the same two texts
    evaluated = _eval(task, model)
    task.cache_teacher_logits(torch.device("cpu"), batch_size=1)  # one length per batch
    cached = task.collate([0, 1], 0)
    assert torch.equal(cached["input_ids"], batch["input_ids"])
    assert "teacher_logits" in cached
    with torch.no_grad():  # the teacher must not run again
        for p in task.teacher.classifier.parameters():
            p.add_(1.0)
    from_cache, g2 = loss_and_grads(cached)
    assert set(from_cache) == {"soft", "hard"}
    for k in recomputed:
        assert torch.allclose(from_cache[k], recomputed[k], rtol=1e-5, atol=1e-6), k
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g1, g2))
    cached_eval = _eval(task, model)  # evaluation reads the cache too (the teacher changed)
    assert cached_eval.keys() == evaluated.keys() and "teacher_agreement" in evaluated
    for k in evaluated:
        assert abs(cached_eval[k] - evaluated[k]) < 1e-5, k


def _eval(task, model) -> dict:
    sums: dict = {}
    with torch.no_grad():
        for b in task.eval_batches(0, 1):
            for k, v in task.eval_sums(model, b).items():
                sums[k] = sums.get(k, 0) + v
    return task.finalize_metrics(sums)


def test_relation_losses_are_kl_of_each_heads_attention(teachers):
    """With as many relation heads as attention heads, the attention relation is the model's
    own attention distribution: the teacher's attention weights give the same KL."""
    task, model, batch = _copy_task(teachers["mlm"], "general", value_weight=0.0)
    teacher = task.teacher
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
        mask = batch["attention_mask"]
        ta = teacher(batch["input_ids"], mask, output_attentions=True).attentions[-1]
        sa = model.student(batch["input_ids"], mask, output_attentions=True).attentions[-1]
        real = mask.bool()
        kl = (ta * (ta.clamp_min(1e-30).log() - sa.clamp_min(1e-30).log())).sum(-1)
        expected = (kl * real[:, None, :]).sum()
        got = task.loss_sums(model, batch)["attention"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- runs


def test_general_distillation_lowers_the_loss_and_saves_an_encoder(teachers, tmp_path, capsys):
    out = tmp_path / "student"
    sets = general_sets(teachers, tmp_path, "distill.hidden_weight=1.0", "train.eval_at_start=true")
    assert cli("distill", "--output", str(out), sets=sets) == 0
    held = read_metric(out, "eval_distill_loss")
    assert len(held) == 3 and held[-1] < held[0]
    assert "student saved in" in capsys.readouterr().out
    student = load_model(out / "model")
    assert type(student) is LanistrModel and student.config.num_layers == 1
    assert (out / "model" / "tokenizer.json").read_text() == (
        teachers["mlm"] / "tokenizer.json").read_text()
    assert not any(k.startswith("projection") for k in read_weights(out / "model"))
    # the student fine-tunes like any encoder
    assert cli("finetune", "--output", str(tmp_path / "ft"), sets=[
        f"init={out / 'model'}", f"data.train={teachers['train']}", "data.max_len=24",
        "finetune.recipe='off'", "train.max_steps=2", "train.batch_size=4",
        "train.progress=false"]) == 0


def test_a_student_from_a_checkpoint_with_the_teachers_tokenizer(teachers, tmp_path):
    """The student may start from a checkpoint (here the teacher cut to one layer) when its
    tokenizer is the teacher's."""
    sets = [s for s in general_sets(teachers, tmp_path) if not s.startswith("model.")]
    assert cli("distill", "--output", str(tmp_path / "s"), sets=[
        *sets, f"init={teachers['mlm']}", "model.num_layers=1", "train.max_steps=2"]) == 0
    assert load_model(tmp_path / "s" / "model").config.num_layers == 1


def test_task_distillation_gives_a_classifier_for_predict(teachers, tmp_path, capsys):
    out = tmp_path / "student"
    unlabelled = write_corpus(tmp_path / "more.txt", docs=10, seed=5)
    assert cli("distill", "--output", str(out), sets=[
        f"distill.teacher={teachers['clf']}", "distill.mode=task", "distill.hard_weight=0.5",
        f"data.train={teachers['train']}", f"data.unlabelled={unlabelled}",
        f"data.eval={teachers['train']}", "data.max_len=24", "data.truncation=head_tail",
        "model.preset=tiny", "model.num_layers=1", "train.max_steps=12", "train.batch_size=4",
        "train.lr=3e-3", "train.eval_every=6", "train.eval_at_start=true",
        "train.progress=false"]) == 0
    soft = read_metric(out, "eval_distill_soft")
    assert soft[-1] < soft[0]
    assert read_metric(out, "eval_teacher_agreement")
    student = load_model(out / "model")
    assert type(student) is LanistrForSequenceClassification
    assert student.config.labels == load_model(teachers["clf"]).config.labels
    from lanistr.tasks.run_config import META_FILE  # predict reads texts as the student learnt

    meta = json.loads((out / "model" / META_FILE).read_text())
    assert (meta["max_len"], meta["truncation"]) == (24, "head_tail")
    capsys.readouterr()
    assert cli("predict", "--model", str(out / "model"), "win free cash now") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in ("spam", "ham")


def _interrupt_at(monkeypatch, call):
    original = distill_mod.DistillTask.collate
    calls = {"n": 0}

    def collate(self, indices, epoch):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, indices, epoch)

    monkeypatch.setattr(distill_mod.DistillTask, "collate", collate)


def test_an_interrupted_distillation_resumes_bitwise(teachers, tmp_path, monkeypatch):
    sets = general_sets(teachers, tmp_path, "distill.hidden_weight=0.5", "model.dropout=0.1",
                        "train.eval_every=0", "train.max_steps=6")
    assert cli("distill", "--output", str(tmp_path / "straight"), sets=sets) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        assert cli("distill", "--output", str(tmp_path / "split"), sets=sets) == 130
    assert (tmp_path / "split" / "checkpoints" / "step-0000003").is_dir()
    assert cli("distill", "--output", str(tmp_path / "split"), "--resume") == 0
    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    a, b = (read_weights(tmp_path / d / "model") for d in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_task_distillation_with_cached_teacher_logits_resumes_bitwise(teachers, tmp_path,
                                                                       monkeypatch, caplog):
    sets = [f"distill.teacher={teachers['clf']}", "distill.mode=task", "distill.hard_weight=0.5",
            f"data.train={teachers['train']}", "data.max_len=24", "model.preset=tiny",
            "model.num_layers=1", "model.dropout=0.1", "train.max_steps=6",
            "train.batch_size=4", "train.lr=3e-3", "train.eval_every=0", "train.progress=false"]
    with caplog.at_level("INFO", logger="lanistr"):
        assert cli("distill", "--output", str(tmp_path / "straight"), sets=sets) == 0
    assert "teacher logits computed once for 24 training and" in caplog.text
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        assert cli("distill", "--output", str(tmp_path / "split"), sets=sets) == 130
    assert cli("distill", "--output", str(tmp_path / "split"), "--resume") == 0
    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    a, b = (read_weights(tmp_path / d / "model") for d in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case, message", [
    ("empty corpus", "empty.txt: empty file"),
    ("no teacher", "distill.teacher: give the teacher's model directory"),
    ("unknown teacher", "distill.teacher: {tmp}/nowhere: no such checkpoint directory"),
    ("teacher without labels", "is not a fine-tuned classifier (architecture LanistrForMaskedLM"),
    ("other tokenizer", "have different tokenizers (vocabularies of"),
    ("heads differ", "the teacher has 4 attention heads and the student 2: set "
                     "distill.relation_heads"),
    ("relation heads", "distill.relation_heads=3 does not divide the teacher's hidden_size=32"),
    ("labels in general mode", "distill.soft_weight and distill.hard_weight need labels"),
])
def test_bad_input_is_a_one_line_error(teachers, tmp_path, capsys, case, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    sets = general_sets(teachers, tmp_path)
    extra = {
        "empty corpus": [f"data.train={tmp_path / 'empty.txt'}"],
        "no teacher": ["distill.teacher="],
        "unknown teacher": [f"distill.teacher={tmp_path / 'nowhere'}"],
        "teacher without labels": ["distill.mode=task"],
        "other tokenizer": [f"init={teachers['clf']}"],
        "heads differ": ["model.num_heads=2"],
        "relation heads": ["distill.relation_heads=3"],
        "labels in general mode": ["distill.hard_weight=1"],
    }[case]
    if case == "other tokenizer":  # a checkpoint whose tokenizer is another one
        other = tmp_path / "other"
        assert cli("pretrain", "--output", str(other), sets=[
            "model.preset=tiny", "model.max_len=32", f"data.train=[{teachers['corpus']}]",
            "data.vocab_size=100", "data.max_len=24", "train.max_steps=1", "train.batch_size=4",
            "train.eval_every=0", "train.progress=false"]) == 0
        sets = [s for s in sets if not s.startswith("model.")]
        extra = [f"init={other / 'model'}"]
    capsys.readouterr()
    code = cli("distill", "--output", str(tmp_path / "run"), sets=[*sets, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message.format(tmp=tmp_path) in err and len(err.splitlines()) == 1, err
