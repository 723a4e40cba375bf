"""Build punctuation-and-capitalisation restoration pairs from the State of the Union speeches.

    python scripts/make_restoration_pairs.py [--out DIR] [--max-words 40] [--dev-speeches 3]

Reads the fetched ``sotu`` dataset (``lanistr data fetch sotu``): ``train.txt`` holds the
speeches before 2000, ``test.txt`` those from 2000 on, one block per speech. Every speech is
cut into sentences (a rule-based splitter that knows common abbreviations such as ``Mr.`` and
``U.S.``); a sentence longer than ``--max-words`` words is cut into consecutive chunks of at
most that many words. Each sentence (chunk) gives one JSONL record::

    {"source": "mr speaker the state of our union is strong",
     "target": "Mr. Speaker, the state of our Union is strong.",
     "speech": 212}

``target`` is the original text (typographic quotes and apostrophes turned into ASCII ones);
``source`` is the target lower-cased with punctuation removed (hyphens, dashes and slashes
become spaces, every other punctuation character is deleted: ``U.S.`` -> ``us``, ``nation's``
-> ``nations``). Sentences with fewer than ``--min-words`` words are skipped.

The split is by speech, so no speech contributes to two parts: ``test.jsonl`` from test.txt
(2000 and later), ``dev.jsonl`` from the last ``--dev-speeches`` speeches of train.txt and
``train.jsonl`` from the others. Output: DIR/{train,dev,test}.jsonl and DIR/stats.json, by
default in ``~/.cache/lanistr/data/sotu-restoration/`` (``$LANISTR_DATA_DIR`` moves it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "gov", "sen", "rep", "hon", "messrs",
    "no", "nos", "vol", "art", "sec", "ch", "pp", "ft", "lt", "col", "capt", "maj", "sgt",
    "adm", "cmdr", "rev", "prof", "vs", "viz", "jan", "feb", "mar", "apr", "aug", "sept",
    "sep", "oct", "nov", "dec", "inc", "co", "corp", "bros", "mt", "ave", "u.s", "u.n",
}
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]*[A-Z0-9])")
_TYPOGRAPHIC = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})
_SPACERS = set("-‐‑–—/")  # become spaces in the source


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (boundaries after . ! ? before a capital or a digit, except
    after a known abbreviation or an initial such as ``J.`` or ``U.S.``)."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(paragraph):
        before = paragraph[start:m.start() + 1].split()
        last = before[-1] if before else ""
        word = last.rstrip(".").lstrip("\"'([").lower()
        if paragraph[m.start()] == "." and (word in ABBREVIATIONS or re.fullmatch(
                r"(?:[a-z]\.)*[a-z]", word)):
            continue
        out.append(paragraph[start:m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def chunks(sentence: str, max_words: int) -> list[str]:
    words = sentence.split()
    return [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]


def to_source(target: str) -> str:
    """Lower-cased, punctuation removed (hyphens, dashes and slashes become spaces)."""
    chars = []
    for c in target.lower():
        if c.isalnum() or c.isspace():
            chars.append(c)
        elif c in _SPACERS:
            chars.append(" ")
    return " ".join("".join(chars).split())


def speech_pairs(text: str, speech: int, max_words: int, min_words: int) -> list[dict]:
    pairs = []
    for paragraph in text.translate(_TYPOGRAPHIC).split("\n"):
        paragraph = " ".join(paragraph.split())
        for sentence in split_sentences(paragraph):
            for chunk in chunks(sentence, max_words):
                source = to_source(chunk)
                if len(chunk.split()) < min_words or not source:
                    continue
                pairs.append({"source": source, "target": chunk, "speech": speech})
    return pairs


def read_speeches(path: Path) -> list[str]:
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return [b.strip() for b in blocks if b.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def build(sotu_dir: Path, out: Path, max_words: int = 40, min_words: int = 3,
          dev_speeches: int = 3) -> dict:
    train_speeches = read_speeches(sotu_dir / "train.txt")
    test_speeches = read_speeches(sotu_dir / "test.txt")
    if len(train_speeches) <= dev_speeches:
        raise SystemExit(f"{sotu_dir}/train.txt has only {len(train_speeches)} speeches")
    cut = len(train_speeches) - dev_speeches
    parts = {"train": [], "dev": [], "test": []}
    for i, text in enumerate(train_speeches):
        parts["train" if i < cut else "dev"] += speech_pairs(text, i, max_words, min_words)
    for i, text in enumerate(test_speeches):
        parts["test"] += speech_pairs(text, len(train_speeches) + i, max_words, min_words)
    out.mkdir(parents=True, exist_ok=True)
    stats = {"source": str(sotu_dir), "max_words": max_words, "min_words": min_words,
             "speeches": {"train": cut, "dev": dev_speeches, "test": len(test_speeches)}}
    for name, records in parts.items():
        write_jsonl(out / f"{name}.jsonl", records)
        words = [len(r["target"].split()) for r in records]
        stats[name] = {"pairs": len(records), "mean_words": round(sum(words) / len(words), 1)}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--sotu-dir", help="the fetched sotu dataset (default: lanistr's "
                                           "data directory; run `lanistr data fetch sotu`)")
    parser.add_argument("--out", help="output directory (default: "
                                      "~/.cache/lanistr/data/sotu-restoration)")
    parser.add_argument("--max-words", type=int, default=40,
                        help="cut longer sentences into chunks of this many words (default 40)")
    parser.add_argument("--min-words", type=int, default=3,
                        help="skip sentences with fewer words (default 3)")
    parser.add_argument("--dev-speeches", type=int, default=3,
                        help="the last N speeches of train.txt form dev.jsonl (default 3)")
    args = parser.parse_args(argv)
    from lanistr.data.fetch import data_root, dataset_dir
    from lanistr.errors import LanistrError

    try:
        sotu = Path(args.sotu_dir).expanduser() if args.sotu_dir else dataset_dir("sotu")
    except LanistrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser() if args.out else data_root() / "sotu-restoration"
    stats = build(sotu, out, args.max_words, args.min_words, args.dev_speeches)
    for name in ("train", "dev", "test"):
        print(f"{out / (name + '.jsonl')}: {stats[name]['pairs']} pairs "
              f"({stats['speeches'][name]} speeches, {stats[name]['mean_words']} words on average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
