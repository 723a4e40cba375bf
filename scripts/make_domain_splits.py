"""Build the cross-domain splits used by benchmarks/domain_adaptation.py and
examples/adapt_*.yaml from the fetched 20 Newsgroups and Brown corpora.

    lanistr data fetch 20newsgroups && lanistr data fetch brown
    python scripts/make_domain_splits.py runs/domain-splits

Each task directory gets:

* ``source_train``       labelled source-domain training data (a subsample of the train split)
* ``target_unlabelled``  target-domain training data *without labels* (for DANN, DAPT, probes)
* ``target_test``        labelled target-domain test data (only ever used for evaluation)
* ``source_test``        labelled source-domain test data (in-domain reference)
* ``dapt_corpus.txt``    the unlabelled text of source_train + target_unlabelled, one
                         document per blank-line separated block (the DAPT corpus)
* ``split.json``         what went where, with counts

20 Newsgroups tasks (binary top-level category; the sub-groups differ between domains):

* ``comp_rec``: source comp.graphics, comp.os.ms-windows.misc, rec.autos, rec.motorcycles;
  target comp.sys.ibm.pc.hardware, comp.sys.mac.hardware, rec.sport.baseball, rec.sport.hockey
* ``sci_talk``: source sci.electronics, sci.med, talk.politics.misc, talk.religion.misc;
  target sci.crypt, sci.space, talk.politics.guns, talk.politics.mideast

Train-side files come from the corpus's train split, test files from its test split.

Brown POS tagging (``brown_news_fiction``, universal tags): source genre ``news``; target the
imaginative-prose genres fiction, mystery, science_fiction, adventure, romance. Brown has no
train/test split per genre, so the target *documents* are split in half (seeded): one half
is the unlabelled training text, the other the test set; the source documents likewise.

Deterministic: the same fetched files, sizes and seed give byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parents[1] / "src") not in sys.path:  # run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lanistr.io import write_json, write_text  # noqa: E402

NEWSGROUP_TASKS = {
    "comp_rec": {
        "source": ["comp.graphics", "comp.os.ms-windows.misc", "rec.autos", "rec.motorcycles"],
        "target": ["comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware", "rec.sport.baseball",
                   "rec.sport.hockey"],
    },
    "sci_talk": {
        "source": ["sci.electronics", "sci.med", "talk.politics.misc", "talk.religion.misc"],
        "target": ["sci.crypt", "sci.space", "talk.politics.guns", "talk.politics.mideast"],
    },
}
BROWN_SOURCE = ["news"]
BROWN_TARGET = ["fiction", "mystery", "science_fiction", "adventure", "romance"]


def _jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _sample(items: list, n: int, rng: np.random.Generator) -> list:
    """``n`` items (all if fewer), in their original order."""
    if n <= 0 or n >= len(items):
        return list(items)
    keep = np.sort(rng.permutation(len(items))[:n])
    return [items[i] for i in keep]


def _by_group(path: Path) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            groups.setdefault(r["label"], []).append(r["text"])
    return groups


def newsgroup_split(name: str, root: Path, out: Path, per_group_train: int,
                    per_group_test: int, seed: int = 0) -> dict:
    """One 20 Newsgroups cross-domain task; ``per_group_*`` examples from every sub-group."""
    spec = NEWSGROUP_TASKS[name]
    train, test = _by_group(root / "train.jsonl"), _by_group(root / "test.jsonl")
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    files: dict[str, list[dict]] = {k: [] for k in ("source_train", "target_unlabelled",
                                                    "target_test", "source_test")}
    for domain in ("source", "target"):
        for group in spec[domain]:
            label = group.split(".")[0]
            texts = [t for t in train[group] if t.strip()]
            train_key = "source_train" if domain == "source" else "target_unlabelled"
            for text in _sample(texts, per_group_train, rng):
                record = {"text": text, "group": group}
                if domain == "source":
                    record["label"] = label
                files[train_key].append(record)
            for text in _sample([t for t in test[group] if t.strip()], per_group_test, rng):
                files[f"{domain}_test"].append({"text": text, "label": label, "group": group})
    out.mkdir(parents=True, exist_ok=True)
    for key, records in files.items():
        write_text(out / f"{key}.jsonl", _jsonl(records))
    corpus = [r["text"] for r in files["source_train"] + files["target_unlabelled"]]
    write_text(out / "dapt_corpus.txt", "\n\n".join(corpus) + "\n")
    info = {"task": name, "kind": "classify", "labels": sorted({g.split(".")[0]
                                                                for g in spec["source"]}),
            **{f"{d}_groups": spec[d] for d in ("source", "target")},
            "counts": {k: len(v) for k, v in files.items()}, "seed": seed,
            "from": str(root)}
    write_json(out / "split.json", info)
    return info


def _brown_docs(path: Path) -> list[list[list[tuple[str, str]]]]:
    """Documents (``# doc:`` comment lines) of a Brown genre file: sentences of (word, tag)."""
    docs: list[list[list[tuple[str, str]]]] = []
    sentence: list[tuple[str, str]] = []
    for raw in path.read_text(encoding="utf-8").split("\n"):
        if raw.startswith("# doc:"):
            docs.append([])
            continue
        if not raw.strip():
            if sentence:
                docs[-1].append(sentence)
                sentence = []
            continue
        word, tag = raw.split("\t")
        sentence.append((word, tag))
    if sentence:
        docs[-1].append(sentence)
    return docs


def _conll(sentences, tags: bool = True) -> str:
    return "".join("".join(f"{w}\t{t if tags else '_'}\n" for w, t in s) + "\n"
                   for s in sentences)


def brown_split(root: Path, out: Path, train_sentences: int, test_sentences: int,
                seed: int = 0) -> dict:
    """News -> fiction POS tagging; documents are split in half per domain (seeded)."""
    rng = np.random.default_rng([seed, 7])
    halves = {}
    for domain, genres in (("source", BROWN_SOURCE), ("target", BROWN_TARGET)):
        docs = [d for g in genres for d in _brown_docs(root / "genres" / f"{g}.conll")]
        order = rng.permutation(len(docs))
        first = sorted(order[:len(docs) // 2].tolist())
        second = sorted(order[len(docs) // 2:].tolist())
        halves[domain] = ([s for i in first for s in docs[i]],
                          [s for i in second for s in docs[i]], len(docs))
    files = {
        "source_train": _sample(halves["source"][0], train_sentences, rng),
        "source_test": _sample(halves["source"][1], test_sentences, rng),
        "target_unlabelled": _sample(halves["target"][0], train_sentences, rng),
        "target_test": _sample(halves["target"][1], test_sentences, rng),
    }
    out.mkdir(parents=True, exist_ok=True)
    for key, sentences in files.items():
        write_text(out / f"{key}.conll", _conll(sentences, tags=key != "target_unlabelled"))
    corpus = [" ".join(w for w, _ in s) for s in files["source_train"] + files["target_unlabelled"]]
    write_text(out / "dapt_corpus.txt", "\n".join(corpus) + "\n")
    info = {"task": "brown_news_fiction", "kind": "tag", "source_genres": BROWN_SOURCE,
            "target_genres": BROWN_TARGET,
            "documents": {d: halves[d][2] for d in halves},
            "counts": {k: len(v) for k, v in files.items()},
            "tokens": {k: sum(len(s) for s in v) for k, v in files.items()},
            "seed": seed, "from": str(root),
            "note": "documents split in half per domain; target_unlabelled has tags '_'; "
                    "dapt_corpus.txt has one sentence per line (one document)"}
    write_json(out / "split.json", info)
    return info


def build_all(out: Path, per_group_train: int = 200, per_group_test: int = 100,
              brown_train: int = 1500, brown_test: int = 1000, seed: int = 0) -> dict:
    from lanistr.data.fetch import dataset_dir

    news = dataset_dir("20newsgroups")
    infos = {name: newsgroup_split(name, news, out / name, per_group_train, per_group_test, seed)
             for name in NEWSGROUP_TASKS}
    infos["brown_news_fiction"] = brown_split(dataset_dir("brown"), out / "brown_news_fiction",
                                              brown_train, brown_test, seed)
    return infos


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory (one sub-directory per task)")
    p.add_argument("--per-group-train", type=int, default=200,
                   help="20NG training examples per sub-group (source and target; 0 = all)")
    p.add_argument("--per-group-test", type=int, default=100,
                   help="20NG test examples per sub-group (0 = all)")
    p.add_argument("--brown-train", type=int, default=1500,
                   help="Brown training sentences per domain (0 = all of the half)")
    p.add_argument("--brown-test", type=int, default=1000,
                   help="Brown test sentences per domain (0 = all of the half)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    infos = build_all(Path(args.out), args.per_group_train, args.per_group_test,
                      args.brown_train, args.brown_test, args.seed)
    for name, info in infos.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in info["counts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
