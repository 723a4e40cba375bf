"""`lanistr data corpus`: one pretraining corpus from the training splits of fetched datasets
and text files, deduplicated, with a manifest; never a test split."""

from __future__ import annotations

import json

import pytest
from tests.helpers import write_corpus

from lanistr.cli import main
from lanistr.data import fetch as fetch_mod
from lanistr.data.corpus import build_corpus
from lanistr.data.readers import read_documents


def fake_fetch(root, name, files: dict[str, str]):
    """A dataset directory as `lanistr data fetch` leaves it (files + completion marker)."""
    d = root / name
    d.mkdir(parents=True)
    for rel, text in files.items():
        (d / rel).write_text(text, encoding="utf-8")
    spec = fetch_mod.REGISTRY[name]
    (d / fetch_mod.MARKER).write_text(json.dumps({"name": name, "sha256": spec.sha256}))
    return d


def jsonl(*texts):
    return "".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in texts)


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("LANISTR_DATA_DIR", str(root))
    fake_fetch(root, "sotu", {"train.txt": "Old speech one.\nMore.\n\nOld  speech two.\n",
                              "test.txt": "TEST SPEECH 2001\n",
                              "speeches.jsonl": jsonl("TEST SPEECH 2001")})
    fake_fetch(root, "spamassassin", {"train.jsonl": jsonl("win money", "hello  bob",
                                                           "win   money", "win money"),
                                      "test.jsonl": jsonl("TEST MAIL")})
    fake_fetch(root, "brown", {"train.conll": "# doc: ca01 genre: news\nThe\tDET\ndog\tNOUN\n"
                                              "\nRan\tVERB\n.\t.\n\n# doc: ca02 genre: news\n"
                                              "A\tDET\ncat\tNOUN\n\n",
                               "test.conll": "# doc: cz99 genre: x\nTEST\tNOUN\n\n"})
    return root


def test_every_fetched_training_split_and_never_a_test_split(datasets, tmp_path, capsys):
    out = tmp_path / "corpus.txt"
    assert main(["data", "corpus", str(out)]) == 0
    assert "duplicates dropped" in capsys.readouterr().out
    docs = [d.text for d in read_documents(out)]
    assert docs == ["Old speech one.\nMore.", "Old speech two.", "win money", "hello bob",
                    "The dog\nRan .", "A cat"]
    assert "TEST" not in out.read_text()
    manifest = json.loads((tmp_path / "corpus.txt.manifest.json").read_text())
    assert manifest["documents"] == 6 and manifest["duplicates_dropped"] == 2
    assert [s["name"] for s in manifest["sources"]] == ["sotu", "spamassassin", "brown"]
    spam = manifest["sources"][1]
    assert spam["split"] == "train" and spam["path"].endswith("spamassassin/train.jsonl")
    assert spam["documents"] == 2 and spam["duplicates_dropped"] == 2 and spam["words"] == 4
    assert len(spam["sha256"]) == 64 and manifest["words"] == sum(
        s["words"] for s in manifest["sources"])


def test_names_and_files_mixed_and_duplicates_across_sources(datasets, tmp_path):
    extra = tmp_path / "notes.txt"
    extra.write_text("hello bob\n\nsomething new\n", encoding="utf-8")
    result = build_corpus(tmp_path / "c.txt", ["spamassassin", str(extra)])
    assert [(s.documents, s.duplicates) for s in result.sources] == [(2, 2), (1, 1)]


def test_the_corpus_pretrains(datasets, tmp_path):
    write_corpus(tmp_path / "text.txt", docs=20)
    out = tmp_path / "c.txt"
    build_corpus(out, ["sotu", str(tmp_path / "text.txt")])
    sets = [f"data.train=[{out}]", "data.vocab_size=120", "data.max_len=16", "model.preset=tiny",
            "model.max_len=16", "train.max_steps=2", "train.batch_size=2", "train.eval_every=0",
            "train.progress=false"]
    args = ["pretrain", "--output", str(tmp_path / "run")]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["nosuch"], "'nosuch' is neither a dataset (sotu, spamassassin"),
    (["reuters-r8"], "dataset 'reuters-r8' is not fetched (looked in"),
    (["{root}/sotu/test.txt"], "not the training split of dataset 'sotu'"),
    (["{root}/sotu/speeches.jsonl"], "not the training split of dataset 'sotu'"),
    (["{root}/brown/test.conll"], "not the training split of dataset 'brown'"),
    (["{tmp}/blank.txt"], "blank.txt: empty file"),
    (["{tmp}/empty.jsonl"], "empty corpus"),
])
def test_bad_sources_are_one_line_errors(datasets, tmp_path, capsys, argv, message):
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    (tmp_path / "empty.jsonl").write_text(jsonl("  ", ""))
    argv = [a.format(root=datasets, tmp=tmp_path) for a in argv]
    assert main(["data", "corpus", str(tmp_path / "c.txt"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    if "reuters" in message:
        assert err.endswith("run `lanistr data fetch reuters-r8`")
    assert not (tmp_path / "c.txt").exists() and not (tmp_path / "c.txt.manifest.json").exists()


def test_an_existing_corpus_needs_overwrite(datasets, tmp_path, capsys):
    out = tmp_path / "c.txt"
    assert main(["data", "corpus", str(out), "sotu"]) == 0
    before = out.read_text()
    assert main(["data", "corpus", str(out), "spamassassin"]) == 2
    assert "the file exists; add --overwrite" in capsys.readouterr().err
    assert out.read_text() == before
    assert main(["data", "corpus", str(out), "spamassassin", "--overwrite"]) == 0
    assert out.read_text() == "win money\n\nhello bob\n"


def test_nothing_fetched_and_nothing_given(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANISTR_DATA_DIR", str(tmp_path / "none"))
    assert main(["data", "corpus", str(tmp_path / "c.txt")]) == 2
    assert "no dataset is fetched" in capsys.readouterr().err
