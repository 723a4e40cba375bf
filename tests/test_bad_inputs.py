"""Bad inputs and faults against the CLI (issue #18).

The table: every row is (setup, command, exit code, message fragment, paths that must be
unchanged). A row runs ``lanistr.cli.main`` in-process and checks the exit code, that stderr
holds the fragment and no traceback, that an error is one line, and that the named paths
(files or whole directories, byte for byte) are as they were; a path that did not exist must
still not exist. Shared fixtures (a tokenizer, a fine-tuned classifier, a pretraining run with
checkpoints) are built once per module.

The fault tests run the CLI as real subprocesses: kill -9 at ten points of a checkpoint save
then --resume (weights bitwise equal to an uninterrupted run), SIGINT and SIGTERM, and two runs
into one directory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import write_corpus

from lanistr.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOTU = ROOT / "data" / "sotu_sample.txt"
SPAM = ROOT / "data" / "spam_train.jsonl"

PT = ("pretrain --set data.train=[{corpus}] --set data.vocab_size=120 --set data.max_len=24 "
      "--set model.preset=tiny --set model.max_len=24 --set train.max_steps=4 "
      "--set train.batch_size=4 --set train.save_every=2 --set train.eval_every=0 "
      "--set train.progress=false")
FT = ("finetune --set init=scratch --set model.preset=tiny --set data.tokenizer={tok} "
      "--set data.train={data} --set data.max_len=32 --set train.max_steps=2 "
      "--set train.batch_size=8 --set train.progress=false")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Built once: a tokenizer, labelled data, a fine-tuned classifier, a pretraining run."""
    from lanistr.data.tokenizer import train_tokenizer

    base = tmp_path_factory.mktemp("world")
    train_tokenizer([SOTU], 400, base / "tok")
    lines = SPAM.read_text(encoding="utf-8").splitlines()[:40]
    (base / "small.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = write_corpus(base / "corpus.txt")
    w = {"tok": base / "tok", "data": base / "small.jsonl", "corpus": corpus,
         "ft": base / "ft" / "model", "run": base / "run", "tmp": base}
    assert main(shlex.split(FT.format(**w)) + ["--output", str(base / "ft")]) == 0
    assert main(shlex.split(PT.format(**w)) + ["--output", str(base / "run")]) == 0
    return w


# -- setups: each gets (world, tmp) and prepares the row's files -------------------------------


def _copy_run(w, tmp):
    shutil.copytree(w["run"], tmp / "run", ignore=shutil.ignore_patterns("model"))


def _copy_ft(w, tmp):
    shutil.copytree(w["ft"].parent, tmp / "ft", ignore=shutil.ignore_patterns("model"))


def _truncate(name):
    def setup(w, tmp):
        _copy_run(w, tmp)
        path = tmp / "run" / "checkpoints" / "step-0000004" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def _rewrite_state(change):
    def setup(w, tmp):
        _copy_run(w, tmp)
        path = tmp / "run" / "checkpoints" / "step-0000004" / "trainer_state.json"
        path.write_text(change(path.read_text()))
    return setup


def _drop_key(key):
    def change(text):
        data = json.loads(text)
        del data[key]
        return json.dumps(data)
    return change


def _remove(name):
    def setup(w, tmp):
        _copy_run(w, tmp)
        (tmp / "run" / "checkpoints" / "step-0000004" / name).unlink()
    return setup


def _empty_dir(w, tmp):
    (tmp / "empty").mkdir()


def _only_log(w, tmp):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "train.log").write_text("an earlier run that never saved\n")


def _existing_outputs(w, tmp):
    (tmp / "e.json").write_text("{}\n")
    (tmp / "p.jsonl").write_text("{}\n")
    (tmp / "viz").mkdir()
    (tmp / "viz" / "summary.json").write_text("{}\n")
    (tmp / "demo").mkdir()
    (tmp / "demo" / "results.md").write_text("earlier\n")


def _model_copy(change):
    def setup(w, tmp):
        shutil.copytree(w["ft"], tmp / "model")
        change(tmp / "model")
    return setup


def _bad_jsonl(w, tmp):
    (tmp / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": broken\n')


def _conll(w, tmp):
    (tmp / "tags.conll").write_text("The\tDET\ncat\tNOUN\n\n")


def _no_label(w, tmp):
    (tmp / "nolabel.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')


def _empty_text(w, tmp):
    (tmp / "empty.txt").write_text("")


def _tok_copy(w, tmp):
    shutil.copytree(w["tok"], tmp / "tok")


def _stale_lock(w, tmp):
    (tmp / "new").mkdir()
    (tmp / "new" / ".lanistr.lock").write_text(json.dumps(
        {"pid": 2**22 + 12345, "host": "elsewhere", "started": "2020-01-01T00:00:00",
         "command": "lanistr pretrain"}))


NONE = None
ROWS = [
    # --- training commands: the --output path -------------------------------------------------
    ("pt-output-file", NONE, PT + " --output {file}", 2, "is a file, not a directory", ["file"]),
    ("pt-output-under-file", NONE, PT + " --output {file}/run", 2, "is a file", ["file"]),
    ("ft-output-file", NONE, FT + " --output {file}", 2, "is a file, not a directory", ["file"]),
    ("ft-output-under-file", NONE, FT + " --output {file}/x/y", 2, "is a file", ["file"]),
    ("dapt-output-file", NONE, "adapt dapt --output {file}", 2, "is a file", ["file"]),
    ("dann-output-file", NONE, "adapt dann --output {file}", 2, "is a file", ["file"]),
    # --- training commands: another run's directory, the lock ---------------------------------
    ("pt-existing-run", _copy_run, PT + " --output {tmp}/run", 2,
     "already holds a training run", ["run"]),
    ("pt-existing-run-set-max-steps", _copy_run,
     PT + " --output {tmp}/run --set train.max_steps=2", 2, "--overwrite", ["run"]),
    ("ft-existing-run", _copy_run, FT + " --output {tmp}/run", 2,
     "already holds a training run", ["run"]),
    ("pt-stale-lock-taken-over", _stale_lock, PT + " --output {tmp}/new --set train.lr=-1", 2,
     "taking over the lock left by a run that is no longer running (pid 4206649", []),
    # --- --resume ------------------------------------------------------------------------------
    ("resume-missing-dir", NONE, PT + " --resume --output {tmp}/typo", 2, "does not exist",
     ["typo"]),
    ("resume-empty-dir", _empty_dir, PT + " --resume --output {tmp}/empty", 2,
     "holds no checkpoint", ["empty"]),
    ("resume-no-checkpoint", _only_log, PT + " --resume --output {tmp}/empty", 2,
     "holds no checkpoint", ["empty"]),
    ("ft-resume-missing-dir", NONE, FT + " --resume --output {tmp}/typo", 2, "does not exist",
     ["typo"]),
    ("resume-truncated-trainer-state", _truncate("trainer_state.safetensors"),
     PT + " --resume --output {tmp}/run", 2, "trainer_state.safetensors: unreadable", ["run"]),
    ("resume-truncated-model", _truncate("model.safetensors"),
     PT + " --resume --output {tmp}/run", 2, "model.safetensors: unreadable", ["run"]),
    ("resume-truncated-json", _truncate("trainer_state.json"),
     PT + " --resume --output {tmp}/run", 2, "trainer_state.json: unreadable", ["run"]),
    ("resume-json-not-json", _rewrite_state(lambda t: "not json"),
     PT + " --resume --output {tmp}/run", 2, "trainer_state.json: unreadable", ["run"]),
    ("resume-json-missing-optimizer", _rewrite_state(_drop_key("optimizer")),
     PT + " --resume --output {tmp}/run", 2, "missing entry 'optimizer'", ["run"]),
    ("resume-json-missing-scheduler", _rewrite_state(_drop_key("scheduler")),
     PT + " --resume --output {tmp}/run", 2, "missing entry 'scheduler'", ["run"]),
    ("resume-json-missing-rng", _rewrite_state(_drop_key("numpy_random")),
     PT + " --resume --output {tmp}/run", 2, "missing entry 'numpy_random'", ["run"]),
    ("resume-no-trainer-tensors", _remove("trainer_state.safetensors"),
     PT + " --resume --output {tmp}/run", 2, "trainer_state.safetensors: unreadable", ["run"]),
    ("resume-no-model-weights", _remove("model.safetensors"),
     PT + " --resume --output {tmp}/run", 2, "missing model.safetensors", ["run"]),
    ("resume-longer-linear-schedule", _copy_run,
     PT + " --resume --output {tmp}/run --set train.max_steps=10", 2,
     "train.max_steps", ["run"]),
    ("resume-other-lr", _copy_run, PT + " --resume --output {tmp}/run --set train.lr=3e-3", 2,
     "train.lr", ["run"]),
    ("resume-other-seed", _copy_run, PT + " --resume --output {tmp}/run --set train.seed=7", 2,
     "train.seed", ["run"]),
    ("resume-other-batch", _copy_run,
     PT + " --resume --output {tmp}/run --set train.batch_size=2", 2, "train.batch_size",
     ["run"]),
    ("ft-resume-other-batch-grouping", _copy_ft,
     FT + " --resume --output {tmp}/ft --set train.group_by_length=true", 2,
     "train.group_by_length", ["ft"]),
    ("resume-other-warmup", _copy_run,
     PT + " --resume --output {tmp}/run --set train.warmup_steps=3", 2,
     "train.warmup_steps", ["run"]),
    ("resume-other-schedule", _copy_run,
     PT + " --resume --output {tmp}/run --set train.schedule=cosine", 2, "train.schedule",
     ["run"]),
    # --- config errors: reported before anything is left in --output --------------------------
    ("pt-unknown-section", NONE, PT + " --output {tmp}/new --set bogus.x=1", 2,
     "unknown section bogus", ["new"]),
    ("pt-unknown-train-key", NONE, PT + " --output {tmp}/new --set train.bogus=1", 2, "bogus",
     ["new"]),
    ("pt-unknown-model-key", NONE, PT + " --output {tmp}/new --set model.bogus=1", 2, "bogus",
     ["new"]),
    ("pt-bad-backend", NONE, PT + " --output {tmp}/new --set model.attention.backend=nope", 2,
     "nope", ["new"]),
    ("pt-max-len-too-long", NONE, PT + " --output {tmp}/new --set data.max_len=100", 2,
     "data.max_len=100 exceeds", ["new"]),
    ("pt-max-len-too-short", NONE, PT + " --output {tmp}/new --set data.max_len=4", 2,
     "data.max_len=4", ["new"]),
    ("pt-lr-zero", NONE, PT + " --output {tmp}/new --set train.lr=0", 2, "train.lr=0", ["new"]),
    ("pt-batch-zero", NONE, PT + " --output {tmp}/new --set train.batch_size=0", 2,
     "train.batch_size=0", ["new"]),
    ("pt-negative-steps", NONE, PT + " --output {tmp}/new --set train.max_steps=-1", 2,
     "train.max_steps=-1", ["new"]),
    ("pt-negative-skip", NONE, PT + " --output {tmp}/new --set train.skip_nonfinite=-1", 2,
     "train.skip_nonfinite=-1", ["new"]),
    ("pt-bad-precision", NONE, PT + " --output {tmp}/new --set train.precision=fp64", 2,
     "precision", ["new"]),
    ("pt-bad-schedule", NONE, PT + " --output {tmp}/new --set train.schedule=bogus", 2,
     "schedule", ["new"]),
    ("pt-heads-do-not-divide", NONE, PT + " --output {tmp}/new --set model.num_heads=5", 2,
     "num_heads", ["new"]),
    ("pt-preset-unknown", NONE, PT + " --output {tmp}/new --set model.preset=nonexistent", 2,
     "nonexistent", ["new"]),
    ("pt-mlm-probability", NONE, PT + " --output {tmp}/new --set data.mlm_probability=1.5", 2,
     "mlm_probability", ["new"]),
    ("pt-missing-corpus", NONE, PT + " --output {tmp}/new --set data.train=[{tmp}/nope.txt]", 2,
     "nope.txt", ["new"]),
    ("pt-empty-corpus", _empty_text, PT + " --output {tmp}/new --set data.train=[{tmp}/empty.txt]",
     2, "empty", ["new"]),
    ("pt-set-without-equals", NONE, PT + " --output {tmp}/new --set train.lr", 2, "train.lr",
     ["new"]),
    ("pt-missing-config-file", NONE, PT + " --output {tmp}/new --config {tmp}/nope.yaml", 2,
     "nope.yaml", ["new"]),
    ("pt-global-batch-too-big", NONE, PT + " --output {tmp}/new --set train.batch_size=100000",
     2, "larger than the training set", ["new"]),
    ("ft-missing-train", NONE, FT + " --output {tmp}/new --set data.train={tmp}/nope.jsonl", 2,
     "nope.jsonl", ["new"]),
    ("ft-bad-jsonl", _bad_jsonl, FT + " --output {tmp}/new --set data.train={tmp}/bad.jsonl", 2,
     "bad.jsonl:2", ["new"]),
    ("ft-conll-without-task-tag", _conll,
     FT + " --output {tmp}/new --set data.train={tmp}/tags.conll", 2, "--set task=tag", ["new"]),
    ("ft-no-label", _no_label, FT + " --output {tmp}/new --set data.train={tmp}/nolabel.jsonl",
     2, "label", ["new"]),
    ("ft-missing-init", NONE, FT + " --output {tmp}/new --set init={tmp}/nope", 2, "nope",
     ["new"]),
    ("ft-init-not-a-checkpoint", NONE, FT + " --output {tmp}/new --set init={tok}", 2,
     "config.json", ["new"]),
    ("ft-bad-task", NONE, FT + " --output {tmp}/new --set task=bogus", 2, "bogus", ["new"]),
    ("ft-missing-tokenizer", NONE, FT + " --output {tmp}/new --set data.tokenizer={tmp}/nope",
     2, "nope", ["new"]),
    # --- tokenizer -----------------------------------------------------------------------------
    ("tok-output-file", NONE, "tokenizer train -i {sotu} --vocab-size 400 -o {file}", 2,
     "is a file", ["file"]),
    ("tok-output-under-file", NONE, "tokenizer train -i {sotu} --vocab-size 400 -o {file}/t", 2,
     "is a file", ["file"]),
    ("tok-into-model-dir", NONE, "tokenizer train -i {sotu} --vocab-size 400 -o {ft}", 2,
     "is a model directory", ["ft"]),
    ("tok-into-model-dir-overwrite", NONE,
     "tokenizer train -i {sotu} --vocab-size 400 -o {ft} --overwrite", 2, "is a model directory",
     ["ft"]),
    ("tok-existing", _tok_copy, "tokenizer train -i {sotu} --vocab-size 300 -o {tmp}/tok", 2,
     "--overwrite", ["tok"]),
    ("tok-vocab-zero", NONE, "tokenizer train -i {sotu} --vocab-size 0 -o {tmp}/new", 2,
     "--vocab-size: 0 must be >= 1", ["new"]),
    ("tok-vocab-text", NONE, "tokenizer train -i {sotu} --vocab-size many -o {tmp}/new", 2,
     "not a whole number", ["new"]),
    ("tok-min-frequency-zero", NONE,
     "tokenizer train -i {sotu} --vocab-size 400 --min-frequency 0 -o {tmp}/new", 2,
     "--min-frequency", ["new"]),
    ("tok-missing-input", NONE, "tokenizer train -i {tmp}/nope.txt --vocab-size 400 -o {tmp}/new",
     2, "nope.txt", ["new"]),
    ("tok-empty-input", _empty_text,
     "tokenizer train -i {tmp}/empty.txt --vocab-size 400 -o {tmp}/new", 2, "empty.txt", ["new"]),
    ("tok-encode-missing", NONE, "tokenizer encode -t {tmp}/nope hello", 2, "nope", []),
    ("tok-encode-max-length-zero", NONE, "tokenizer encode -t {tok} hello --max-length 0", 2,
     "--max-length", []),
    ("tok-no-subcommand", NONE, "tokenizer", 2, "required", []),
    # --- evaluate ------------------------------------------------------------------------------
    ("eval-output-under-file", NONE, "evaluate --model {ft} --data {data} --output {file}/e.json",
     2, "is a file, not a directory", ["file"]),
    ("eval-output-dir", NONE, "evaluate --model {ft} --data {data} --output {tok}", 2,
     "is a directory", ["tok"]),
    ("eval-output-exists", _existing_outputs,
     "evaluate --model {ft} --data {data} --output {tmp}/e.json", 2, "--overwrite", ["e.json"]),
    ("eval-batch-zero", NONE, "evaluate --model {ft} --data {data} --batch-size 0", 2,
     "--batch-size: 0 must be >= 1", []),
    ("eval-batch-negative", NONE, "evaluate --model {ft} --data {data} --batch-size -3", 2,
     "--batch-size", []),
    ("eval-batch-text", NONE, "evaluate --model {ft} --data {data} --batch-size ten", 2,
     "not a whole number", []),
    ("eval-missing-model", NONE, "evaluate --model {tmp}/nope --data {data}", 2, "nope", []),
    ("eval-model-is-tokenizer", NONE, "evaluate --model {tok} --data {data}", 2, "config.json",
     []),
    ("eval-missing-data", NONE, "evaluate --model {ft} --data {tmp}/nope.jsonl", 2, "nope.jsonl",
     []),
    ("eval-bad-data", _bad_jsonl, "evaluate --model {ft} --data {tmp}/bad.jsonl", 2,
     "bad.jsonl:2", []),
    ("eval-truncated-weights",
     _model_copy(lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 10)),
     "evaluate --model {tmp}/model --data {data}", 2, "model.safetensors", []),
    ("eval-bad-config-json", _model_copy(lambda d: (d / "config.json").write_text("{oops")),
     "evaluate --model {tmp}/model --data {data}", 2, "config.json", []),
    ("eval-stride-zero", NONE, "evaluate --model {ft} --data {data} --windows --stride 0", 2,
     "stride", []),
    # --- predict -------------------------------------------------------------------------------
    ("predict-output-dir", NONE, "predict --model {ft} hello --output {tok}", 2,
     "--output", ["tok"]),
    ("predict-output-under-file", NONE, "predict --model {ft} hello --output {file}/p.jsonl", 2,
     "is a file", ["file"]),
    ("predict-output-exists", _existing_outputs,
     "predict --model {ft} hello --output {tmp}/p.jsonl", 2, "--overwrite", ["p.jsonl"]),
    ("predict-batch-zero", NONE, "predict --model {ft} hello --batch-size 0", 2,
     "--batch-size: 0 must be >= 1", []),
    ("predict-batch-negative", NONE, "predict --model {ft} hello --batch-size -1", 2,
     "--batch-size", []),
    ("predict-batch-float", NONE, "predict --model {ft} hello --batch-size 1.5", 2,
     "not a whole number", []),
    ("predict-nothing", NONE, "predict --model {ft}", 2, "nothing to predict", []),
    ("predict-both", NONE, "predict --model {ft} hello --input {data}", 2, "not both", []),
    ("predict-missing-input", NONE, "predict --model {ft} --input {tmp}/nope.txt", 2,
     "nope.txt", []),
    ("predict-conll-for-classifier", NONE, "predict --model {ft} --input {tmp}/x.conll", 2,
     "x.conll", []),
    ("predict-missing-model", NONE, "predict --model {tmp}/nope hello", 2, "nope", []),
    ("predict-stride-zero", NONE, "predict --model {ft} hello --windows --stride 0", 2, "stride",
     []),
    # --- generate ------------------------------------------------------------------------------
    ("gen-batch-zero", NONE, "generate --model {ft} hello --batch-size 0", 2, "--batch-size", []),
    ("gen-beams-zero", NONE, "generate --model {ft} hello --beams 0", 2, "--beams", []),
    ("gen-max-new-zero", NONE, "generate --model {ft} hello --max-new-tokens 0", 2,
     "--max-new-tokens", []),
    ("gen-output-dir", NONE, "generate --model {ft} hello --output {tok}", 2, "is a directory",
     ["tok"]),
    ("gen-output-exists", _existing_outputs, "generate --model {ft} hello --output {tmp}/p.jsonl",
     2, "--overwrite", ["p.jsonl"]),
    ("gen-not-seq2seq", NONE, "generate --model {ft} hello", 2, "seq2seq", []),
    ("gen-nothing", NONE, "generate --model {ft}", 2, "source texts", []),
    # --- visualize -----------------------------------------------------------------------------
    ("viz-output-file", NONE, "visualize --model {ft} --text hi --output {file}", 2,
     "is a file, not a directory", ["file"]),
    ("viz-output-under-file", NONE, "visualize --model {ft} --text hi --output {file}/v", 2,
     "is a file", ["file"]),
    ("viz-output-exists", _existing_outputs, "visualize --model {ft} --text hi --output {tmp}/viz",
     2, "--overwrite", ["viz"]),
    ("viz-max-len-zero", NONE, "visualize --model {ft} --text hi --output {tmp}/new --max-len 0",
     2, "--max-len", ["new"]),
    ("viz-query-negative", NONE,
     "visualize --model {ft} --text hi --output {tmp}/new --query-token -1", 2, "--query-token",
     ["new"]),
    ("viz-bad-layer", NONE, "visualize --model {ft} --text hi --output {tmp}/new --layers 9", 2,
     "--layers: 9", ["new"]),
    ("viz-bad-heads", NONE, "visualize --model {ft} --text hi --output {tmp}/new --heads x", 2,
     "--heads", ["new"]),
    ("viz-bad-window", NONE, "visualize --model {ft} --text hi --output {tmp}/new --window 5", 2,
     "--window", ["new"]),
    ("viz-max-cells", NONE, "visualize --model {ft} --text hi --output {tmp}/new --max-cells 1",
     2, "--max-cells", ["new"]),
    ("viz-missing-model", NONE, "visualize --model {tmp}/nope --text hi --output {tmp}/new", 2,
     "nope", ["new"]),
    # --- convert-hf, export, config, demo -------------------------------------------------------
    ("convert-lanistr-source", NONE, "convert-hf {ft} {tmp}/new", 2, "lanistr checkpoint already",
     ["new", "ft"]),
    ("convert-missing-source", NONE, "convert-hf {tmp}/nope {tmp}/new", 2, "nope", ["new"]),
    ("convert-tokenizer-source", NONE, "convert-hf {tok} {tmp}/new", 2, "config.json", ["new"]),
    ("convert-output-file", NONE, "convert-hf {ft} {file}", 2, "is a file", ["file"]),
    ("export-output-file", NONE, "export --format hf {ft} {file}", 2, "is a file", ["file"]),
    ("export-missing-source", NONE, "export --format hf {tmp}/nope {tmp}/new", 2, "nope",
     ["new"]),
    ("config-preset-unknown", NONE, "config show --preset nonexistent", 2, "nonexistent", []),
    ("config-set-unknown", NONE, "config show --preset tiny --set bogus=1", 2, "bogus", []),
    ("config-missing-file", NONE, "config show --config {tmp}/nope.yaml", 2, "nope.yaml", []),
    ("demo-output-file", NONE, "demo --output {file}", 2, "is a file", ["file"]),
    ("demo-output-exists", _existing_outputs, "demo --output {tmp}/demo", 2, "--overwrite",
     ["demo"]),
    ("demo-threads-negative", NONE, "demo --output {tmp}/new --threads -1", 2, "--threads",
     ["new"]),
    # --- arguments -----------------------------------------------------------------------------
    ("unknown-command", NONE, "frobnicate", 2, "invalid choice", []),
    ("unknown-option", NONE, "predict --model {ft} hello --bogus", 2, "unrecognized", []),
    ("missing-required", NONE, "evaluate --model {ft}", 2, "--data", []),
    ("pt-missing-output", NONE, "pretrain", 2, "--output", []),
]


def _state(path: Path):
    """Bytes of a file, or of every file under a directory (None: absent)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def test_the_table_has_at_least_100_rows():
    assert len(ROWS) >= 100
    assert len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name, setup, command, code, fragment, unchanged", ROWS,
                         ids=[r[0] for r in ROWS])
def test_bad_input(world, tmp_path, capsys, name, setup, command, code, fragment, unchanged):
    (tmp_path / "file").write_text("a plain file\n")
    if setup is not None:
        setup(world, tmp_path)
    places = {**{k: str(v) for k, v in world.items()}, "tmp": str(tmp_path),
              "file": str(tmp_path / "file"), "sotu": str(SOTU)}
    where = {k: Path(places[k]) if k in ("ft", "tok", "file") else tmp_path / k
             for k in unchanged}
    before = {k: _state(p) for k, p in where.items()}
    capsys.readouterr()
    rc = main(shlex.split(command.format(**places)))
    err = capsys.readouterr().err
    assert rc == code, err
    assert fragment in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lanistr"), err
    for k, p in where.items():
        assert _state(p) == before[k], f"{p} changed"


# -- the lock, the error boundary --------------------------------------------------------------


def test_a_live_holder_is_named_and_overwrite_cannot_take_its_directory(world, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lanistr.rundir import acquire; "
         f"acquire({str(tmp_path / 'run')!r}, 'lanistr pretrain'); print('held', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = shlex.split(PT.format(**{**world, "tmp": tmp_path})) + ["--output",
                                                                       str(tmp_path / "run")]
        for extra in ([], ["--overwrite"]):
            capsys.readouterr()
            assert main(args + extra) == 2
            err = capsys.readouterr().err
            assert f"in use by another run (pid {holder.pid}" in err
            assert err.count("\n") == 1
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lanistr.lock"]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_bug_prints_one_line_and_the_traceback_file(monkeypatch, capsys, tmp_path):
    from lanistr.commands import backends

    def boom(args):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(backends, "run", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["backends"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ZeroDivisionError: deliberate" in err
    written = list(tmp_path.glob("lanistr-error-*.txt"))
    assert len(written) == 1 and "Traceback" in written[0].read_text()
    assert str(written[0]) in err
    monkeypatch.setenv("LANISTR_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["backends"])


def test_nan_run_names_a_finite_checkpoint_and_resumes_from_it(world, tmp_path, capsys):
    """The issue's reproduction: lr=1e4 blows up the weights; nothing non-finite is saved,
    the named checkpoint is finite, and with keep_last=1 it is still there."""
    import torch

    from lanistr.checkpoint import read_weights

    args = shlex.split(PT.format(**{**world, "tmp": tmp_path})) + [
        "--output", str(tmp_path / "run"), "--set", "train.lr=1e4", "--set",
        "train.warmup_steps=30", "--set", "train.save_every=1", "--set", "train.keep_last=1",
        "--set", "train.max_steps=60", "--set", "train.precision=fp32"]  # no precision advice
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "verified finite" in err and "use train.precision" not in err
    ckpts = list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert ckpts and all(all(torch.isfinite(t).all() for t in read_weights(c).values())
                         for c in ckpts)
    assert str(ckpts[-1]) in err


def test_skip_nonfinite_skips_bad_batches_and_continues(world, tmp_path, monkeypatch):
    from lanistr.tasks import pretrain as pretrain_mod

    original = pretrain_mod.MLMTask.loss_sums
    calls = {"n": 0}

    def loss_sums(self, model, batch):
        calls["n"] += 1
        sums = original(self, model, batch)
        if calls["n"] in (2, 3):
            sums["mlm"] = sums["mlm"] * float("inf")
        return sums

    monkeypatch.setattr(pretrain_mod.MLMTask, "loss_sums", loss_sums)
    args = shlex.split(PT.format(**{**world, "tmp": tmp_path})) + [
        "--output", str(tmp_path / "run"), "--set", "train.skip_nonfinite=2"]
    assert main(args) == 0
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-0000004" /
                        "trainer_state.json").read_text())
    assert state["state"]["skipped"] == 2 and state["state"]["step"] == 4
    calls["n"] = 0
    assert main(args[:-2] + ["--set", "train.skip_nonfinite=1", "--overwrite"]) == 2


# -- fault tests: real processes ----------------------------------------------------------------


def _cli(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "lanistr", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kw)


def _fault_args(tmp: Path, out: Path, steps: int = 6) -> list[str]:
    corpus = write_corpus(tmp / "corpus.txt")
    sets = [f"data.train=[{corpus}]", "data.vocab_size=120", "data.max_len=24",
            "model.preset=tiny", "model.max_len=24", f"train.max_steps={steps}",
            "train.batch_size=4", "train.save_every=2", "train.keep_last=1",
            "train.eval_every=0", "train.progress=false", "model.dropout=0.1",
            f"data.cache_dir={tmp / 'cache'}"]
    return ["pretrain", "--output", str(out)] + [a for s in sets for a in ("--set", s)]


FAILPOINTS = ["checkpoint.model:2", "checkpoint.extra:2", "checkpoint.trainer_state:2",
              "checkpoint.json:2", "checkpoint.saved:1", "checkpoint.prune:1",
              "checkpoint.model:3", "checkpoint.trainer_state:3", "checkpoint.saved:2",
              "checkpoint.prune:2"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    proc = _cli(_fault_args(tmp, tmp / "run"))
    assert proc.returncode == 0, proc.stderr
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("point", FAILPOINTS)
def test_kill_9_during_a_save_then_resume_is_bitwise_exact(straight, tmp_path, point):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    killed = _cli(_fault_args(tmp_path, out), env={"LANISTR_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _cli(_fault_args(tmp_path, out) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "taking over the lock" in resumed.stderr
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    def logged(run):  # losses and learning rates (tokens_per_s is a timing)
        return [r for r in (run / "metrics.csv").read_text().splitlines()
                if ",tokens_per_s," not in r]

    assert logged(out) == logged(straight)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and not (out / ".lanistr.lock").exists()


def _wait_for_steps(out: Path, proc, rows: int = 2, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        metrics = out / "metrics.csv"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > rows:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the run did not start")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_save_a_checkpoint_that_resumes(tmp_path, sig, code):
    out = tmp_path / "run"
    args = _fault_args(tmp_path, out, steps=100000)
    args += ["--set", "train.save_every=100000"]
    proc = subprocess.Popen([sys.executable, "-m", "lanistr", *args], stderr=subprocess.PIPE,
                            text=True)
    _wait_for_steps(out, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and not (out / ".lanistr.lock").exists()
    # resumable: the checkpoint loads (a run with other max_steps is refused, naming it)
    again = _cli(args[:-2] + ["--resume", "--set", "train.save_every=100000",
                              "--set", "train.max_steps=100001"])
    assert again.returncode == 2 and "train.max_steps" in again.stderr


@pytest.mark.slow
def test_two_runs_into_one_directory(tmp_path):
    out = tmp_path / "run"
    args = _fault_args(tmp_path, out, steps=100000) + ["--set", "train.save_every=100000"]
    first = subprocess.Popen([sys.executable, "-m", "lanistr", *args], stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for_steps(out, first)
        for extra in ([], ["--overwrite"]):
            second = _cli(args + extra + ["--set", "train.seed=1"])
            assert second.returncode == 2, second.stderr
            assert f"in use by another run (pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    steps = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]
             if ",loss," in line]
    assert len(steps) == len(set(steps))  # one run's rows only
