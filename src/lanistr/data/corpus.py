"""One pretraining corpus from the training splits of fetched datasets and from text files.

``lanistr data corpus OUT [SOURCES...]`` writes ``OUT``, a text file of documents separated by
blank lines (the format ``lanistr pretrain`` reads), and ``OUT.manifest.json`` beside it. A
source is a dataset name (its *training* split only: ``sotu`` train.txt, ``spamassassin``,
``20newsgroups`` and ``reuters-r8`` train.jsonl, ``brown`` train.conll) or a file path
(``.txt`` blocks, ``.jsonl`` ``text`` fields, ``.conll`` sentences). A dataset's test split is
refused, by name or by path, so that a model pretrained on the corpus is never evaluated on
text it has seen. Documents are whitespace-normalised line by line; an exact duplicate of an
earlier document (after that normalisation) is dropped and counted.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lanistr.data import fetch as fetch_mod
from lanistr.errors import DataError, LanistrError
from lanistr.io import atomic_path, check_output_file, write_json

#: The training split of each dataset (the only file of it a corpus may take).
TRAIN_SPLITS = {"sotu": "train.txt", "spamassassin": "train.jsonl",
                "20newsgroups": "train.jsonl", "reuters-r8": "train.jsonl",
                "brown": "train.conll"}
MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class Source:
    """One input of a corpus and what it gave."""

    name: str  # the dataset name, or the path as given
    path: Path
    dataset: str | None = None
    sha256: str = ""
    documents: int = 0  # kept
    words: int = 0  # whitespace-separated words kept
    duplicates: int = 0  # dropped: an exact copy of an earlier document
    empty: int = 0  # dropped: no text

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "dataset": self.dataset,
                "split": "train" if self.dataset else None, "sha256": self.sha256,
                "documents": self.documents, "words": self.words,
                "duplicates_dropped": self.duplicates, "empty_dropped": self.empty}


@dataclass
class CorpusResult:
    path: Path
    manifest: Path
    sources: list[Source] = field(default_factory=list)

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.sources)

    @property
    def words(self) -> int:
        return sum(s.words for s in self.sources)

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources)


def manifest_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + MANIFEST_SUFFIX)


def fetched_datasets() -> list[str]:
    """The datasets fetched into :func:`lanistr.data.fetch.data_root`, in registry order."""
    return [name for name, spec in fetch_mod.REGISTRY.items()
            if fetch_mod.is_fetched(spec, fetch_mod.default_dir(name))]


def resolve_sources(names: Sequence[str]) -> list[Source]:
    """Dataset names and file paths -> sources (no names: every fetched dataset)."""
    if not names:
        names = fetched_datasets()
        if not names:
            raise LanistrError(f"no dataset is fetched in {fetch_mod.data_root()} and no file "
                               "was given; run `lanistr data fetch NAME` (e.g. sotu) or name "
                               "text files")
    sources = []
    for name in names:
        if name in fetch_mod.REGISTRY:
            if name not in TRAIN_SPLITS:
                raise LanistrError(f"dataset {name!r} has no training split known to `lanistr "
                                   "data corpus`")
            directory = fetch_mod.dataset_dir(name)  # says `lanistr data fetch NAME` if not
            sources.append(Source(name, directory / TRAIN_SPLITS[name], dataset=name))
            continue
        path = Path(name).expanduser()
        if not path.exists():
            raise LanistrError(f"{name!r} is neither a dataset ({', '.join(fetch_mod.REGISTRY)}) "
                               "nor an existing file")
        if path.is_dir():
            raise LanistrError(f"{name}: is a directory; give a text file (.txt, .jsonl, "
                               ".conll) or a dataset name")
        _refuse_test_split(path)
        sources.append(Source(name, path))
    seen: dict[Path, str] = {}
    for s in sources:
        key = s.path.resolve()
        if key in seen:
            raise LanistrError(f"{s.name} and {seen[key]} are the same file; give it once")
        seen[key] = s.name
    return sources


def _refuse_test_split(path: Path) -> None:
    """A file of a fetched dataset's directory other than its training split is refused:
    test.*, speeches.jsonl (every year) and genres/ (every file) all hold test documents."""
    resolved = path.resolve()
    root = fetch_mod.data_root().resolve()
    for name, train in TRAIN_SPLITS.items():
        directory = root / name
        if directory in resolved.parents and resolved != directory / train:
            raise LanistrError(f"{path}: not the training split of dataset {name!r} (it holds "
                               "held-out test text); a pretraining corpus takes training data "
                               f"only: give {name} or {directory / train}")


def normalise(text: str) -> str:
    """One document as the corpus holds it: every line's whitespace collapsed, empty lines
    dropped (a blank line would split the document)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def read_source_documents(path: Path) -> Iterator[str]:
    """The documents of a file: ``.txt`` blocks, ``.jsonl`` ``text`` fields, ``.conll``
    documents (``# doc:`` lines start one; else a sentence each), words joined by spaces."""
    from lanistr.data.readers import read_documents, read_text

    if path.suffix.lower() == ".conll":
        doc: list[str] = []
        sentence: list[str] = []
        for line in read_text(path).split("\n"):
            if line.startswith("# doc:") or not line.strip():
                if sentence:
                    doc.append(" ".join(sentence))
                    sentence = []
                if line.startswith("# doc:") and doc:
                    yield "\n".join(doc)
                    doc = []
                continue
            if not line.startswith("#"):
                sentence.append(line.split()[0])
        if sentence:
            doc.append(" ".join(sentence))
        if doc:
            yield "\n".join(doc)
        return
    for d in read_documents(path):
        yield d.text


def build_corpus(out: str | os.PathLike, names: Sequence[str] = (), *,
                 overwrite: bool = False) -> CorpusResult:
    """Write the corpus ``out`` and its manifest (both atomically) from ``names``."""
    out = Path(out).expanduser()
    manifest = manifest_path(out)
    check_output_file(out, overwrite, what="OUT")
    check_output_file(manifest, overwrite, what="OUT's manifest")
    sources = resolve_sources(names)
    if any(s.path.resolve() == out.resolve() for s in sources):
        raise LanistrError(f"OUT {out} is also an input; write the corpus elsewhere")
    result = CorpusResult(out, manifest, sources)
    seen: set[bytes] = set()
    corpus_hash = hashlib.sha256()
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        first = True
        for source in sources:
            source.sha256 = fetch_mod.sha256_file(source.path)
            for text in read_source_documents(source.path):
                doc = normalise(text)
                if not doc:
                    source.empty += 1
                    continue
                key = hashlib.sha256(doc.encode("utf-8")).digest()
                if key in seen:
                    source.duplicates += 1
                    continue
                seen.add(key)
                chunk = ("" if first else "\n") + doc + "\n"
                fh.write(chunk)
                corpus_hash.update(chunk.encode("utf-8"))
                first = False
                source.documents += 1
                source.words += len(doc.split())
        if not result.documents:
            raise DataError(", ".join(s.name for s in sources), None,
                            "empty corpus: no text in the sources (nothing was written)")
        fh.flush()
    write_json(manifest, {
        "corpus": str(out), "sha256": corpus_hash.hexdigest(), "documents": result.documents,
        "words": result.words, "duplicates_dropped": result.duplicates,
        "format": "documents separated by blank lines (lanistr pretrain data.train)",
        "sources": [s.to_dict() for s in sources],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return result
