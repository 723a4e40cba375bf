"""Line-number-aware readers for the input files lanistr trains and predicts on.

Every reader returns items that remember the line they started on, so a later stage
(tokenization, label lookup) can still name ``file:line`` in its error. Every reader
fails the same way on the same problems, with a :class:`~lanistr.errors.DataError`:

- a missing file:                 ``path: no such file``
- bytes that are not UTF-8:       ``path:LINE: not valid UTF-8 (byte 0x.. at byte offset N) ...``
- a file with nothing to read:    ``path: empty file, no records``

Formats:

- ``.txt`` documents (:func:`read_documents`): blocks separated by blank lines.
- ``.jsonl`` / ``.csv`` / ``.tsv`` records (:func:`read_records`): the fields a task needs.
- CoNLL (:func:`read_conll`): one ``word ... tag`` per line, blank line between sentences.
- plain lines (:func:`read_lines`): one item per non-empty line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lanistr.errors import DataError

RECORD_SUFFIXES = {".jsonl": None, ".csv": ",", ".tsv": "\t"}
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Document:
    """A block of text; ``line`` is the 1-based line its first line is on."""

    text: str
    line: int


@dataclass(frozen=True)
class Record:
    """One row of a JSONL/CSV/TSV file. ``values`` holds every field of the row (the
    requested ones are guaranteed present); ``line`` is where the row starts."""

    values: dict
    line: int
    path: str

    def __getitem__(self, field: str):
        return self.values[field]


@dataclass(frozen=True)
class Sentence:
    """A CoNLL sentence; ``line`` is the line of its first token."""

    words: list[str]
    tags: list[str]
    line: int

    def __len__(self) -> int:
        return len(self.words)


# --------------------------------------------------------------------------- helpers


def read_text(path: str | os.PathLike) -> str:
    """The whole file as text, with the shared missing-file and UTF-8 checks.

    A leading UTF-8 byte-order mark is dropped; ``\\r\\n`` line ends become ``\\n``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file")
    if path.is_dir():
        raise DataError(path, None, "is a directory, expected a file")
    data = path.read_bytes()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            path,
            line,
            f"not valid UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset}); "
            "re-encode the file as UTF-8",
        ) from None
    return text.replace("\r\n", "\n")


def _lines(path: Path) -> list[str]:
    return read_text(path).split("\n")


def _empty(path) -> DataError:
    return DataError(path, None, "empty file, no records")


# --------------------------------------------------------------------------- readers


def read_documents(path: str | os.PathLike) -> list[Document]:
    """Documents of a text file: blocks of lines separated by one or more blank lines.

    A ``.jsonl`` file is read as records with a ``text`` field instead, one document each.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return [Document(str(r["text"]), r.line) for r in read_records(path, ["text"])]
    docs: list[Document] = []
    block: list[str] = []
    start = 0
    for number, line in enumerate(_lines(path), start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line.rstrip())
        elif block:
            docs.append(Document("\n".join(block), start))
            block = []
    if block:
        docs.append(Document("\n".join(block), start))
    if not docs:
        raise _empty(path)
    return docs


def read_records(path: str | os.PathLike, fields: Sequence[str]) -> list[Record]:
    """Records of a ``.jsonl``, ``.csv`` or ``.tsv`` file (chosen by extension), each
    holding at least ``fields``. CSV/TSV files need a header row naming the columns."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RECORD_SUFFIXES:
        raise DataError(
            path,
            None,
            f"unsupported extension {suffix or '(none)'!r}: expected .jsonl, .csv or .tsv"
            + (" (a CoNLL file is for tagging: set task: tag, e.g. --set task=tag)"
               if suffix in (".conll", ".conllu", ".bio") else ""),
        )
    if isinstance(fields, str):
        fields = [fields]
    if suffix == ".jsonl":
        records = _read_jsonl(path, fields)
    else:
        records = _read_delimited(path, fields, RECORD_SUFFIXES[suffix])
    if not records:
        raise _empty(path)
    return records


def _read_jsonl(path: Path, fields: Sequence[str]) -> list[Record]:
    records = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                path, number, f"malformed JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(path, number, f"expected a JSON object, found {type(obj).__name__}")
        for field in fields:
            if field not in obj:
                raise DataError(
                    path, number, f"missing field {field!r} (found: {', '.join(obj) or 'none'})"
                )
            if obj[field] is None:
                raise DataError(path, number, f"field {field!r} is null")
        records.append(Record(obj, number, str(path)))
    return records


def _read_delimited(path: Path, fields: Sequence[str], delimiter: str) -> list[Record]:
    text = read_text(path)
    csv.field_size_limit(2**31 - 1)  # documents can be longer than csv's 128 KiB default
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    header: list[str] | None = None
    header_line = 1
    records = []
    previous_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(path, previous_end + 1, f"malformed {kind}: {exc}") from None
        start, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in row], start
            missing = [f for f in fields if f not in header]
            if missing:
                raise DataError(
                    path,
                    header_line,
                    f"missing column {missing[0]!r} in the header (found: {', '.join(header)})",
                )
            continue
        if len(row) != len(header):
            raise DataError(
                path,
                start,
                f"expected {len(header)} {kind} columns as in the header, found {len(row)}",
            )
        records.append(Record(dict(zip(header, row)), start, str(path)))
    return records


def read_conll(path: str | os.PathLike) -> list[Sentence]:
    """Sentences of a CoNLL-style file: one token per line, the word in the first column
    and the tag in the last (tab- or whitespace-separated), a blank line between sentences.
    ``#`` comment lines and ``-DOCSTART-`` lines are skipped; a token ``#`` must be
    written tab-separated (``#<TAB>tag``) to be told apart from a comment."""
    path = Path(path)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def close():
        nonlocal words, tags
        if words:
            sentences.append(Sentence(words, tags, start))
            words, tags = [], []

    for number, raw in enumerate(_lines(path), start=1):
        line = raw.strip()
        if not line:
            close()
            continue
        if line.startswith("#") and line.split("\t")[0].strip() != "#":
            continue  # a comment; a token "#" is written "#<TAB>tag"
        cols = line.split("\t") if "\t" in line else line.split()
        if cols[0].strip() == "-DOCSTART-":
            close()
            continue
        cols = [c.strip() for c in cols]
        if len(cols) < 2 or not cols[0] or not cols[-1]:
            raise DataError(
                path,
                number,
                f"expected 'word<TAB>tag' (at least two columns), found {raw.strip()!r}",
            )
        if not words:
            start = number
        words.append(cols[0])
        tags.append(cols[-1])
    close()
    if not sentences:
        raise _empty(path)
    return sentences


def read_lines(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a plain text file (trailing whitespace removed), one item each;
    ``-`` reads standard input."""
    if str(path) == "-":
        import sys

        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError as exc:
            raise DataError("<stdin>", None, f"not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None
        lines = text.replace("\r\n", "\n").split("\n")
        path = "<stdin>"
    else:
        lines = _lines(Path(path))
    items = [line.rstrip() for line in lines if line.strip()]
    if not items:
        raise _empty(path)
    return items
