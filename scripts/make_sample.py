"""Regenerate the embedded CC0 sample in data/ from the fetched datasets.

    lanistr data fetch sotu && lanistr data fetch spamassassin
    python scripts/make_sample.py            # writes data/sotu_sample.txt, data/spam_*.jsonl

Deterministic: the same fetched files give byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lanistr.data.fetch import dataset_dir
from lanistr.data.readers import read_documents, read_records
from lanistr.io import write_text

REPO = Path(__file__).resolve().parents[1]
SOTU_EVERY = 7  # every 7th speech by year: 34 speeches, ~1.4 MB, 1790 to 2020
MAX_CHARS = 1500
SPAM_TRAIN = {"spam-1": 500, "easy-ham-1": 600, "hard-ham-1": 100}  # 1,200, 42% spam
SPAM_TEST = {"spam-2": 200, "easy-ham-2": 200}  # 400, 50% spam


def truncate(text: str, limit: int = MAX_CHARS) -> str:
    """Cut at ``limit`` characters, back to the last space if one is near."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit - 100 else cut


def sotu_sample(sotu: Path) -> str:
    docs = read_documents(sotu / "train.txt") + read_documents(sotu / "test.txt")
    return "\n\n".join(d.text for d in docs[::SOTU_EVERY]) + "\n"


def spam_sample(path: Path, quota: dict[str, int], seed: int) -> str:
    rng = random.Random(seed)
    records = read_records(path, ["text", "label", "group"])
    chosen = []
    for group, n in quota.items():
        members = [r.values for r in records if r["group"] == group]
        chosen += rng.sample(members, n)
    rng.shuffle(chosen)
    keep = ("text", "label", "group", "id")
    lines = (
        json.dumps({k: truncate(r[k]) if k == "text" else r[k] for k in keep}, ensure_ascii=False)
        for r in chosen
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data", help="default: data/")
    args = parser.parse_args()
    spam = dataset_dir("spamassassin")
    outputs = {
        "sotu_sample.txt": sotu_sample(dataset_dir("sotu")),
        "spam_train.jsonl": spam_sample(spam / "train.jsonl", SPAM_TRAIN, seed=0),
        "spam_test.jsonl": spam_sample(spam / "test.jsonl", SPAM_TEST, seed=1),
    }
    for name, text in outputs.items():
        write_text(args.out / name, text)
        print(f"{args.out / name}: {len(text.encode('utf-8')):,} bytes")


if __name__ == "__main__":
    main()
