"""Labelled examples: reading JSONL/CSV/TSV (texts, pairs, labels) and CoNLL (tagged words),
tokenising them once into :class:`Encoded` arrays, and padding batches of them.

A bad record is a :class:`~lanistr.errors.DataError` naming its file and line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lanistr.data.tokenizer import Tokenizer
from lanistr.errors import DataError

log = logging.getLogger("lanistr")

IGNORE = -100  # target of a token that has no label (specials, later pieces of a word)
_CHUNK = 512  # examples tokenised per call


@dataclass
class Encoded:
    """Pre-tokenised examples of one file. ``targets`` is an int64 array of label ids
    (classification) or one int64 array per example aligned with ``ids`` (tagging, -100 on
    every piece but a word's first, on specials and on cut-off words)."""

    path: str
    lines: list[int]
    ids: list[np.ndarray]
    types: list[np.ndarray] | None
    targets: np.ndarray | list[np.ndarray]
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> Encoded:
        pick = list(index)
        targets = (self.targets[pick] if isinstance(self.targets, np.ndarray)
                   else [self.targets[i] for i in pick])
        return Encoded(self.path, [self.lines[i] for i in pick], [self.ids[i] for i in pick],
                       None if self.types is None else [self.types[i] for i in pick], targets,
                       self.num_truncated)


def concat_encoded(parts: Sequence[Encoded]) -> Encoded:
    """One :class:`Encoded` of several (e.g. the files of a ``data.train`` list), in order."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    targets = (np.concatenate([p.targets for p in parts]) if isinstance(first.targets, np.ndarray)
               else [t for p in parts for t in p.targets])
    types = None if first.types is None else [t for p in parts for t in p.types]
    return Encoded(" + ".join(p.path for p in parts), [x for p in parts for x in p.lines],
                   [x for p in parts for x in p.ids], types, targets,
                   sum(p.num_truncated for p in parts))


def resolve_path(path: str | Path) -> Path:
    return Path(path).expanduser()


def read_labelled_texts(path: str | Path, text_field: str, label_field: str | None,
                        pair_field: str | None = None):
    """``(texts, pairs | None, labels | None, lines)`` of a JSONL/CSV/TSV file; labels are
    strings (a JSON number ``1`` becomes ``"1"``)."""
    from lanistr.data.readers import read_records

    fields = [text_field] + ([pair_field] if pair_field else []) + (
        [label_field] if label_field else [])
    records = read_records(resolve_path(path), fields)
    texts, pairs, labels = [], [] if pair_field else None, [] if label_field else None
    for r in records:
        for name in fields[:1 + bool(pair_field)]:
            if not isinstance(r[name], str):
                raise DataError(path, r.line, f"field {name!r} must be text, found "
                                f"{type(r[name]).__name__}")
        texts.append(r[text_field])
        if pair_field:
            pairs.append(r[pair_field])
        if label_field:
            labels.append(_label_str(r[label_field], path, r.line, label_field))
    return texts, pairs, labels, [r.line for r in records]


def _label_str(value, path, line, name) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(path, line, f"field {name!r} must be a string or number, found {value!r}")
    text = str(value).strip()
    if not text:
        raise DataError(path, line, f"empty label in field {name!r}")
    return text


def label_ids(labels: Sequence[str], known: Sequence[str], path, lines: Sequence[int],
              train_path: str | None = None) -> np.ndarray:
    """Map label strings to ids; an unknown label is a DataError naming file and line."""
    index = {name: i for i, name in enumerate(known)}
    out = np.empty(len(labels), dtype=np.int64)
    for i, name in enumerate(labels):
        if name not in index:
            src = f"the training data ({train_path})" if train_path else "the model's label set"
            shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise DataError(path, lines[i], f"label {name!r} does not occur in {src}; "
                            f"known labels: {shown}")
        out[i] = index[name]
    return out


def _overlong(path, line, n_tokens: int, max_len: int) -> DataError:
    return DataError(path, line, f"{n_tokens} tokens is longer than max_len={max_len} "
                     "(raise data.max_len, or drop --no-truncate to cut long examples)")


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], pairs: Sequence[str] | None,
                 max_len: int, *, truncate: bool = True, path="<input>",
                 lines: Sequence[int] | None = None, truncation: str = "head"):
    """Token ids (int32, no padding) of every text (pair), its segment ids (pairs only),
    and how many examples were cut to ``max_len`` (keeping their ``truncation``: head or
    head_tail tokens). With ``truncate=False`` an over-long example raises a DataError
    naming its file and line."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] | None = [] if pairs is not None else None
    truncated = 0
    for start in range(0, len(texts), _CHUNK):
        a = list(texts[start:start + _CHUNK])
        b = None if pairs is None else list(pairs[start:start + _CHUNK])
        batch = tokenizer.encode(a, b, max_length=max_len, padding=True, truncation=truncation)
        if batch.num_truncated and not truncate:
            for j, text in enumerate(a):
                n = len(tokenizer.tokenize(text)) + 2
                if b is not None:
                    n += len(tokenizer.tokenize(b[j])) + 1
                if n > max_len:
                    raise _overlong(path, lines[start + j] if lines else start + j + 1, n, max_len)
        truncated += batch.num_truncated
        lengths = batch.attention_mask.sum(1).tolist()
        input_ids = batch.input_ids.numpy().astype(np.int32)
        token_types = batch.token_type_ids.numpy().astype(np.int8)
        for j, n in enumerate(lengths):
            ids.append(input_ids[j, :n].copy())
            if types is not None:
                types.append(token_types[j, :n].copy())
    return ids, types, truncated


def first_piece_targets(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> np.ndarray:
    """Per-token targets: the word's label on its first piece, -100 elsewhere."""
    out = np.full(len(word_ids), IGNORE, dtype=np.int64)
    previous = None
    for t, w in enumerate(word_ids):
        if w is not None and w != previous:
            out[t] = word_labels[w]
        previous = w
    return out


def encode_tagged(tokenizer: Tokenizer, sentences, known: Sequence[str], max_len: int, *,
                  truncate: bool = True, path="<input>", train_path: str | None = None):
    """Token ids and first-piece-aligned targets of CoNLL sentences (see :class:`Encoded`)."""
    ids, targets, truncated = [], [], 0
    for start in range(0, len(sentences), _CHUNK):
        chunk = sentences[start:start + _CHUNK]
        batch = tokenizer.encode_words([s.words for s in chunk], max_length=max_len,
                                       padding=True, truncation=True)
        if batch.num_truncated and not truncate:
            for s in chunk:
                n = sum(len(tokenizer.tokenize(w)) for w in s.words) + 2
                if n > max_len:
                    raise _overlong(path, s.line, n, max_len)
        truncated += batch.num_truncated
        lengths = batch.attention_mask.sum(1).tolist()
        input_ids = batch.input_ids.numpy().astype(np.int32)
        for j, s in enumerate(chunk):
            tags = label_ids(s.tags, known, path, [s.line + k for k in range(len(s))], train_path)
            n = lengths[j]
            ids.append(input_ids[j, :n].copy())
            targets.append(first_piece_targets(batch.word_ids[j][:n], tags))
    return ids, targets, truncated


def report_truncation(data: Encoded, limit: int | str, report: dict) -> None:
    """Log and record (in ``report``: file -> (truncated, examples)) how many were cut;
    ``limit`` is max_len, or a description such as "hierarchical.max_segments=16"."""
    report[data.path] = (data.num_truncated, len(data))
    if data.num_truncated:
        limit = f"max_len={limit}" if isinstance(limit, int) else limit
        log.warning("%s: %d of %d examples truncated to %s", data.path,
                    data.num_truncated, len(data), limit)


# --------------------------------------------------------------------------- batching


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar over ``total`` examples, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", dynamic_ncols=True)


def length_batches(seqs: Sequence[Sized], batch_size: int, *, limit: int | None = None,
                   rank: int = 0, world_size: int = 1, progress: bool = False,
                   desc: str = "") -> Iterator[list[int]]:
    """Indices into ``seqs`` (the first ``limit`` of them) in batches of ``batch_size`` of
    similar length, shortest first (a stable sort, so equal lengths keep input order), so
    that little of a batch is padding; under data parallelism each rank takes every
    ``world_size``-th index of the sorted order. ``progress`` shows a bar over the items."""
    n = len(seqs) if limit is None else min(limit, len(seqs))
    order = np.argsort([len(seqs[i]) for i in range(n)], kind="stable")[rank::world_size].tolist()
    bar = progress_bar(len(order), progress, desc)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()


def pad_batch(ids: Sequence[np.ndarray], pad_id: int,
              types: Sequence[np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest example: input_ids, attention_mask, token_type_ids (B, T).
    Segmented documents ((S, T) arrays, -1 after a segment's end) give (B, S, T)."""
    if ids and np.ndim(ids[0]) == 2:
        return _pad_segments(ids, pad_id)
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    token_types = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
        if types is not None:
            token_types[i, :len(x)] = types[i]
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(token_types)}


def _pad_segments(docs: Sequence[np.ndarray], pad_id: int) -> dict[str, torch.Tensor]:
    s = max(d.shape[0] for d in docs)
    t = max(d.shape[1] for d in docs)
    grid = np.full((len(docs), s, t), -1, dtype=np.int64)
    for i, d in enumerate(docs):
        grid[i, :d.shape[0], :d.shape[1]] = d
    mask = grid >= 0
    grid[~mask] = pad_id
    input_ids = torch.from_numpy(grid)
    return {"input_ids": input_ids, "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "token_type_ids": torch.zeros_like(input_ids)}


def encode_segmented(tokenizer: Tokenizer, texts: Sequence[str], h) -> tuple[list[np.ndarray], int]:
    """Whole documents as overlapping ``[CLS] ... [SEP]`` segments (``HierarchicalConfig``
    ``h``): one (S, T) int32 array per text, -1 after a segment's end; and how many documents
    needed more than ``h.max_segments`` segments (their tail is dropped)."""
    out, cut = [], 0
    for segs, was_cut in document_segments(tokenizer, texts, h.segment_len, h.stride,
                                           h.max_segments):
        grid = np.full((len(segs), max(len(x) for x in segs)), -1, dtype=np.int32)
        for j, seg in enumerate(segs):
            grid[j, :len(seg)] = seg
        out.append(grid)
        cut += was_cut
    return out, cut


def document_segments(tokenizer: Tokenizer, texts: Sequence[str], segment_len: int, stride: int,
                      max_segments: int | None = None):
    """Per text, its overlapping ``[CLS] ... [SEP]`` segments (lists of ids) and whether more
    than ``max_segments`` were needed (None: no limit, every token is kept)."""
    from lanistr.data.segments import split_into_segments

    for start in range(0, len(texts), _CHUNK):
        for ids, _ in tokenizer.encode_documents(list(texts[start:start + _CHUNK])):
            limit = len(ids) + 1 if max_segments is None else max_segments
            yield split_into_segments(ids.tolist(), segment_len, stride, limit,
                                      tokenizer.cls_id, tokenizer.sep_id)


def pad_targets(targets: Sequence[np.ndarray], width: int) -> torch.Tensor:
    out = np.full((len(targets), width), IGNORE, dtype=np.int64)
    for i, t in enumerate(targets):
        out[i, :len(t)] = t
    return torch.from_numpy(out)


def balanced_weights(counts: np.ndarray) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"``: n / (K * n_c) (0 for an absent class)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    out = np.zeros_like(counts)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out
