"""The package's shape: imports flow config -> data -> model -> tasks, every architecture loads
whichever module was imported first, and the command boundary works as documented (--set on a
trained model, --resume with no other flag, stdin input, the stop reason)."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import pretrain_sets, write_corpus
from lanistr.checkpoint import read_weights
from lanistr.cli import main
from lanistr.config import LanistrConfig
from lanistr.data.tokenizer import train_tokenizer

SRC = Path(__file__).resolve().parents[1] / "src"


# --------------------------------------------------------------------------- imports


def _module_imports() -> dict[str, set[str]]:
    """Every lanistr module -> the lanistr modules it imports (top level or inside functions)."""
    out = {}
    for path in (SRC / "lanistr").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_pkg else parts[:-1]
                    base = base[: len(base) - node.level + 1]
                    found.add(".".join(base + ([node.module] if node.module else [])))
                elif node.module:
                    found.add(node.module)
        out[name] = {m for m in found if m.startswith("lanistr")}
    return out


def test_imports_flow_one_way():
    imports = _module_imports()
    back_edges = [f"{m} -> {t}" for m, targets in imports.items() for t in targets
                  if (m.startswith("lanistr.config") and t.startswith("lanistr.nn"))
                  or (m.startswith("lanistr.nn") and t.startswith("lanistr.data"))]
    assert back_edges == []
    tasks = {m: {t for t in ts if t.startswith("lanistr.tasks.")}
             for m, ts in imports.items() if m.startswith("lanistr.tasks.")}

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(tasks.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += tasks.get(m, ())
        return seen

    assert sorted(m for m in tasks if m in reach(m)) == []


def test_task_modules_use_public_names_only():
    """A task module never imports another module's underscored internals."""
    private = []
    for path in (SRC / "lanistr" / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lanistr"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_")]
    assert private == []


# --------------------------------------------------------------------------- registry


def _tiny(name: str) -> torch.nn.Module:
    from lanistr.nn.models import ARCHITECTURES

    changes = {"labels": ["a", "b"], "decoder_layers": 1}
    if name == "LanistrForDocumentClassification":
        changes.update(long="hierarchical",
                       hierarchical={"segment_len": 32, "stride": 24, "max_segments": 4})
    config = LanistrConfig.from_name("tiny", **changes)
    return ARCHITECTURES[name](config)


def test_every_architecture_loads_in_a_fresh_process(tmp_path):
    """load_model knows every architecture in a process that imported only the loader (the
    registry fills when lanistr.nn is imported, not when a model's own module happens to be)."""
    from lanistr.nn.models import ARCHITECTURES

    dirs = {}
    for name in sorted(ARCHITECTURES):
        model = _tiny(name)
        model.save_pretrained(tmp_path / name)
        dirs[name] = str(tmp_path / name)
    code = ("import json, sys\nfrom lanistr.nn.models import load_model\n"
            "print(json.dumps({d: type(load_model(d)).__name__ for d in sys.argv[1:]}))")
    out = subprocess.run([sys.executable, "-c", code, *dirs.values()], capture_output=True,
                         text=True, check=True)
    loaded = json.loads(out.stdout)
    assert {name: loaded[d] for name, d in dirs.items()} == {n: n for n in dirs}
    assert len(dirs) >= 9  # encoder, MLM, NSP, classifiers, tagger, seq2seq x2, domain heads


# --------------------------------------------------------------------------- the CLI boundary


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny random classifier with a tokenizer, as a fine-tuned model directory."""
    tmp = tmp_path_factory.mktemp("cls")
    tok = train_tokenizer([write_corpus(tmp / "c.txt")], 120, tmp / "model", min_frequency=1)
    torch.manual_seed(0)
    config = LanistrConfig.from_name("tiny", vocab_size=tok.vocab_size, labels=["ham", "spam"],
                                     max_len=64)
    from lanistr.nn import LanistrForSequenceClassification

    LanistrForSequenceClassification(config).save_pretrained(tmp / "model")
    return tmp / "model"


def _predict(capsys, *args) -> list[dict]:
    assert main(["predict", *map(str, args)]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_switches_the_attention_backend_of_a_trained_model(classifier, capsys):
    texts = ["the union state congress people", "war peace economy tax we our budget"]
    full = _predict(capsys, "--model", classifier, *texts)
    sliding = _predict(capsys, "--model", classifier, "--set",
                       "model.attention.backend=sliding_window", "--set",
                       "model.attention.window=64", *texts)
    narrow = _predict(capsys, "--model", classifier, "--set",
                      "model.attention.backend=sliding_window", "--set",
                      "model.attention.window=1", "--set", "model.attention.global_tokens=[]",
                      *texts)
    for a, b in zip(full, sliding):  # a window wider than the text is full attention
        for label in ("ham", "spam"):
            assert a["probabilities"][label] == pytest.approx(b["probabilities"][label], abs=1e-5)
    assert any(abs(a["probabilities"]["ham"] - c["probabilities"]["ham"]) > 1e-6
               for a, c in zip(full, narrow))  # a 1-token window is not
    assert main(["predict", "--model", str(classifier), "--set", "train.lr=1", "x"]) == 2
    assert "only model.KEY=VALUE" in capsys.readouterr().err
    assert main(["predict", "--model", str(classifier), "--set",
                 "model.attention.backend=nope", "x"]) == 2
    assert "not a registered backend" in capsys.readouterr().err


def test_predict_reads_standard_input(classifier, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"first text\n\nsecond\n")))
    rows = _predict(capsys, "--model", classifier, "--input", "-")
    assert [r["text"] for r in rows] == ["first text", "second"]
    assert main(["predict", "--model", str(classifier), "x", "--output", "p.csv"]) == 2
    assert "NAME.jsonl" in capsys.readouterr().err


def test_resume_needs_no_other_flag_and_names_changed_settings(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for s in pretrain_sets(tmp_path, max_steps=4, save_every=2, keep_last=3)
            for a in ("--set", s)]
    assert main(["pretrain", *sets, "--output", str(run)]) == 0
    finished = read_weights(run / "model")
    # lose the last checkpoint and the model: --resume alone continues from step 2
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-0000004")
    shutil.rmtree(run / "model")
    capsys.readouterr()
    assert main(["pretrain", "--output", str(run), "--resume"]) == 0, capsys.readouterr().err
    again = read_weights(run / "model")
    assert again.keys() == finished.keys()
    assert all(torch.equal(again[k], finished[k]) for k in finished)  # bitwise
    # a setting given again that differs is named, not silently used
    assert main(["pretrain", "--output", str(run), "--resume", "--set", "train.lr=0.1"]) == 2
    assert "train.lr (0.002 -> 0.1)" in capsys.readouterr().err


def test_stop_reason_names_the_bound_that_stopped_the_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", docs=6)
    sets = [f"data.train=[{corpus}]", "data.vocab_size=120", "data.max_len=24",
            "model.preset=tiny", "model.max_len=24", "train.progress=false",
            "train.batch_size=8", "train.epochs=1", "train.max_steps=1000",
            f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["pretrain", *[a for s in sets for a in ("--set", s)],
                 "--output", str(tmp_path / "r")]) == 0
    log = (tmp_path / "r" / "train.log").read_text()
    assert "(epochs=1 reached)" in log and "before train.max_steps=1000" in log
