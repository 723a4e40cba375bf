"""Small corpora and readers shared by tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = ("the union state congress people nation war peace economy tax health law we our "
         "government must will year america jobs freedom citizens budget").split()


def write_corpus(path: Path, docs: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    blocks = []
    for _ in range(docs):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) + "."
                 for _ in range(rng.randint(2, 6))]
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def read_metric(run_dir: Path, name: str) -> list[float]:
    """Values of one metric from a run's metrics.csv, in step order."""
    with (Path(run_dir) / "metrics.csv").open(encoding="utf-8") as fh:
        return [float(r["value"]) for r in csv.DictReader(fh) if r["name"] == name]


def pretrain_sets(tmp: Path, **train) -> list[str]:
    corpus = write_corpus(tmp / "corpus.txt")
    held = write_corpus(tmp / "held.txt", docs=8, seed=1)
    sets = [f"data.train=[{corpus}]", f"data.eval=[{held}]", "data.vocab_size=120",
            "data.max_len=24", "model.preset=tiny", "model.max_len=24", "train.lr=2e-3",
            "train.progress=false", "train.eval_every=5", f"data.cache_dir={tmp / 'cache'}"]
    return sets + [f"train.{k}={v}" for k, v in train.items()]
