"""Pretraining through the shared loop: exact resume, Ctrl-C, NaN stop, bad inputs."""

import os
import signal

import pytest
import torch
from tests.helpers import pretrain_sets, read_metric, write_corpus

from lanistr.checkpoint import read_weights
from lanistr.cli import main
from lanistr.config import apply_overrides
from lanistr.errors import TrainingError
from lanistr.tasks import pretrain as pretrain_mod


def run_config(sets):
    return apply_overrides({}, sets)


def test_pretrain_cli_learns_and_writes_a_usable_model(tmp_path):
    sets = pretrain_sets(tmp_path, max_steps=20, batch_size=8, save_every=10, eval_at_start="true")
    args = ["pretrain", "--output", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    losses = read_metric(tmp_path / "run", "loss")
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5])
    held = read_metric(tmp_path / "run", "eval_mlm_loss")
    assert len(held) == 5 and held[-1] < held[0]  # step 0 (untrained) + every 5 steps
    model_dir = tmp_path / "run" / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-0000010", "step-0000020"]


def _interrupt_at(monkeypatch, step_to_interrupt):
    """Send a real SIGINT while the given step is being computed (the Ctrl-C path)."""
    original = pretrain_mod.MLMTask.collate
    calls = {"n": 0}

    def collate(self, indices, epoch):
        calls["n"] += 1
        if calls["n"] == step_to_interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, indices, epoch)

    monkeypatch.setattr(pretrain_mod.MLMTask, "collate", collate)


def test_interrupt_then_resume_is_bitwise_identical(tmp_path, monkeypatch):
    # Dropout on, so the restored RNG state matters too.
    sets = pretrain_sets(tmp_path, max_steps=8, batch_size=4, save_every=100, eval_every=0)
    sets += ["model.dropout=0.1", "model.attention_dropout=0.1"]
    pretrain_mod.pretrain(run_config(sets), tmp_path / "straight")

    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            pretrain_mod.pretrain(run_config(sets), tmp_path / "split")
    assert (tmp_path / "split" / "checkpoints" / "step-0000003").is_dir()
    pretrain_mod.pretrain(run_config(sets), tmp_path / "split", resume=True)

    assert read_metric(tmp_path / "split", "loss") == read_metric(tmp_path / "straight", "loss")
    a = read_weights(tmp_path / "straight" / "model")
    b = read_weights(tmp_path / "split" / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fresh_run_into_another_runs_directory_is_refused_or_replaced(tmp_path, capsys):
    """Without --resume, an output directory holding another run's metrics/checkpoints is
    refused (its checkpoints stay), and --overwrite replaces them: the new metrics.csv holds
    only the new run and no old checkpoint outranks the new ones."""
    sets = pretrain_sets(tmp_path, max_steps=6, batch_size=4, save_every=6, eval_every=0)
    args = ["pretrain", "--output", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    old = read_weights(tmp_path / "run" / "checkpoints" / "step-0000006")
    old_config = (tmp_path / "run" / "run_config.yaml").read_text()
    assert main(args + ["--set", "train.max_steps=4", "--set", "train.save_every=4"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (tmp_path / "run" / "run_config.yaml").read_text() == old_config
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000006"]
    assert torch.equal(next(iter(old.values())), next(iter(read_weights(
        tmp_path / "run" / "checkpoints" / "step-0000006").values())))
    assert main(args + ["--overwrite", "--set", "train.max_steps=4",
                        "--set", "train.save_every=4"]) == 0
    assert len(read_metric(tmp_path / "run", "loss")) == 4
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-0000004"]


def test_resume_drops_metrics_logged_after_the_last_checkpoint(tmp_path):
    """A run killed between checkpoints logged steps the resumed run redoes: those rows go."""
    sets = pretrain_sets(tmp_path, max_steps=6, batch_size=4, save_every=3, eval_every=0,
                         log_every=1)
    pretrain_mod.pretrain(run_config(sets), tmp_path / "straight")
    pretrain_mod.pretrain(run_config(sets), tmp_path / "killed")
    import shutil

    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "step-0000006")  # "killed" after 5
    pretrain_mod.pretrain(run_config(sets), tmp_path / "killed", resume=True)
    assert read_metric(tmp_path / "killed", "loss") == read_metric(tmp_path / "straight", "loss")


def test_nan_loss_stops_and_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    sets = pretrain_sets(tmp_path, max_steps=6, batch_size=4, save_every=2, eval_every=0)
    original = pretrain_mod.MLMTask.loss_sums
    calls = {"n": 0}

    def loss_sums(self, model, batch):
        calls["n"] += 1
        sums = original(self, model, batch)
        if calls["n"] == 3:
            sums["mlm"] = sums["mlm"] * float("nan")
        return sums

    monkeypatch.setattr(pretrain_mod.MLMTask, "loss_sums", loss_sums)
    with pytest.raises(TrainingError, match="non-finite loss .* at step 3.*step-0000002"):
        pretrain_mod.pretrain(run_config(sets), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000002"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert not (tmp_path / "run" / "checkpoints" / "step-0000003").exists()
    assert set(before) >= {"model.safetensors", "trainer_state.json", "trainer_state.safetensors"}
    read_weights(ckpt)  # still loadable


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text(""), "empty"),
    (lambda p: p.write_bytes(b"caf\xe9 au lait\n"), "UTF-8"),
    (None, "no such file"),
])
def test_bad_corpus_gives_a_one_line_error(tmp_path, capsys, make, message):
    corpus = tmp_path / "corpus.txt"
    if make:
        make(corpus)
    code = main(["pretrain", "--output", str(tmp_path / "run"), "--set", f"data.train=[{corpus}]",
                 "--set", "model.preset=tiny", "--set", "data.max_len=32",
                 "--set", "train.max_steps=2"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    # progress lines (logging) may come first; the error is one line, the last, no traceback
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "Traceback" not in err
    assert message in errors[0] and "corpus.txt" in errors[0]


def test_invalid_config_is_reported(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt")
    code = main(["pretrain", "--output", str(tmp_path / "r"), "--set", f"data.train=[{corpus}]",
                 "--set", "data.max_len=100", "--set", "model.preset=tiny"])
    assert code == 2
    assert "data.max_len=100 exceeds the model's max_len=64" in capsys.readouterr().err
    assert not (tmp_path / "r" / "tokenizer").exists()  # refused before any work
    code = main(["pretrain", "--output", str(tmp_path / "r"), "--set", "bogus.x=1"])
    assert code == 2 and "unknown section bogus" in capsys.readouterr().err


def test_bf16_autocast_trains(tmp_path):
    sets = pretrain_sets(tmp_path, max_steps=12, batch_size=8, eval_every=12, precision="bf16")
    result = pretrain_mod.pretrain(run_config(sets), tmp_path / "bf16")
    losses = read_metric(tmp_path / "bf16", "loss")
    assert all(x == x for x in losses) and sum(losses[-3:]) < sum(losses[:3])
    assert result.metrics["eval_mlm_loss"] < losses[0]
    # Weights stay fp32 (autocast computes in bf16, the master weights do not change dtype).
    assert all(t.dtype == torch.float32 for t in read_weights(tmp_path / "bf16" / "model").values())


def test_a_new_model_with_learned_positions_is_as_long_as_its_pretraining_sequences():
    from types import SimpleNamespace

    from lanistr.tasks.run_config import PretrainDataConfig

    tok = SimpleNamespace(vocab_size=50, pad_id=0)  # all the model builder reads of it
    data = PretrainDataConfig(max_len=32)
    small = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32}
    build = pretrain_mod.build_mlm_model
    assert build(small, tok, data, None).config.max_len == 32  # only 32 positions trained
    assert build({**small, "max_len": 64}, tok, data, None).config.max_len == 64  # as asked
    design = build({"preset": "lanistr", **small}, tok, data, None).config  # sinusoidal
    assert design.position == "sinusoidal" and design.max_len == 512
