"""Pretraining data: a token cache, packed MLM sequences, NSP sentence pairs, and masking.

Flow: ``build_token_cache`` tokenises a corpus once into memory-mapped arrays;
``PackedDataset`` (MLM) or ``NSPDataset`` (MLM + next-sentence prediction) cut examples
out of it; ``MLMCollator`` pads a batch and masks it.

Determinism: a dataset item depends only on the cache and its index (and ``seed`` for NSP);
the mask of an item depends only on ``(seed, epoch, index)`` and its tokens. So batch size,
number of ranks, worker count and resuming never change what a given example looks like.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lanistr.data.tokenizer import SpecialIds, Tokenizer, _file_list
from lanistr.errors import ConfigError, DataError, LanistrError
from lanistr.io import atomic_path, write_json

if TYPE_CHECKING:
    import torch

CACHE_FORMAT = 1
IGNORE_INDEX = -100  # label of a token that is not predicted (torch's cross_entropy default)
_NSP_STREAM = 0x4E5350  # "NSP": keeps NSP's random stream apart from the masking stream
_ENCODE_BATCH_DOCS = 256
_PROGRESS_MIN_BYTES = 16 << 20


# --------------------------------------------------------------------------- token cache


class TokenCache:
    """Token ids of a tokenised corpus, memory-mapped from a cache directory.

    ``ids`` (int32) and ``word_start`` (uint8, 1 on the first piece of a word) are flat over
    all documents; document ``d`` is ``ids[doc_offsets[d]:doc_offsets[d + 1]]``. Documents
    that tokenise to nothing are dropped. ``reused`` tells whether the cache was found on disk.
    """

    IDS = "ids.npy"
    WORD_START = "word_start.npy"
    OFFSETS = "doc_offsets.npy"
    META = "meta.json"

    def __init__(self, path: str | os.PathLike, reused: bool = True):
        self.path = Path(path)
        meta_file = self.path / self.META
        try:
            self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LanistrError(f"{meta_file}: not a lanistr token cache ({exc})") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise LanistrError(
                f"{meta_file}: token cache format {self.meta.get('format')}, expected {CACHE_FORMAT}; "
                "delete the directory to rebuild it"
            )
        self.ids = np.load(self.path / self.IDS, mmap_mode="r")
        self.word_start = np.load(self.path / self.WORD_START, mmap_mode="r")
        self.doc_offsets = np.load(self.path / self.OFFSETS, mmap_mode="r")
        self.key: str = self.meta["key"]
        self.vocab_size: int = self.meta["vocab_size"]
        self.special_ids = SpecialIds(**self.meta["special_ids"])
        self.reused = reused

    def __reduce__(self):
        # Pickle (e.g. into DataLoader workers) by path: the workers re-open the memory maps
        # instead of receiving a copy of the whole corpus.
        return (TokenCache, (str(self.path), self.reused))

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return self.num_documents

    def doc_lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.doc_offsets))

    def document(self, index: int) -> np.ndarray:
        """Token ids of document ``index`` (a read-only view)."""
        return self.ids[self.doc_offsets[index] : self.doc_offsets[index + 1]]

    def __repr__(self) -> str:
        return (
            f"TokenCache({self.num_documents} documents, {self.num_tokens} tokens, "
            f"path={str(self.path)!r})"
        )


def cache_key(files: Sequence[str | os.PathLike], tokenizer: Tokenizer) -> str:
    """Hash of the tokenizer's ``tokenizer.json`` and each file's path, size and mtime."""
    digest = hashlib.sha256(f"lanistr-token-cache-{CACHE_FORMAT}\n".encode())
    digest.update(tokenizer.to_json().encode("utf-8"))
    for file in files:
        file = Path(file)
        try:
            stat = file.stat()
        except FileNotFoundError:
            raise DataError(file, None, "no such file") from None
        digest.update(f"\n{file.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def build_token_cache(
    files: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: Tokenizer,
    cache_dir: str | os.PathLike,
    progress: bool | None = None,
) -> TokenCache:
    """Tokenise every document of ``files`` once and cache the result under ``cache_dir``.

    A second call with the same tokenizer and unchanged files (same paths, sizes, mtimes)
    opens the existing cache instead. The cache directory is written atomically. A tqdm
    bar is shown when ``progress`` is True, or (None) when the corpus is over 16 MiB.
    """
    from lanistr.data.readers import read_documents

    files = _file_list(files)
    key = cache_key(files, tokenizer)
    target = Path(cache_dir) / f"tokens-{key[:20]}"
    if (target / TokenCache.META).is_file():
        return TokenCache(target, reused=True)

    total_bytes = sum(f.stat().st_size for f in files)
    show = progress if progress is not None else total_bytes >= _PROGRESS_MIN_BYTES
    from tqdm.auto import tqdm

    ids_parts: list[np.ndarray] = []
    start_parts: list[np.ndarray] = []
    lengths: list[int] = []
    file_info = []
    with tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="tokenising", disable=not show
    ) as bar:
        for file in files:
            texts = [d.text for d in read_documents(file) if d.text.strip()]
            first_doc = len(lengths)
            for lo in range(0, len(texts), _ENCODE_BATCH_DOCS):
                chunk = texts[lo : lo + _ENCODE_BATCH_DOCS]
                for ids, starts in tokenizer.encode_documents(chunk):
                    if len(ids):
                        ids_parts.append(ids)
                        start_parts.append(starts)
                        lengths.append(len(ids))
                bar.update(sum(len(t.encode("utf-8")) for t in chunk))
            file_info.append(
                {
                    "path": str(file.resolve()),
                    "first_document": first_doc,
                    "documents": len(lengths) - first_doc,
                }
            )
            if len(lengths) == first_doc:
                raise DataError(file, None, "no tokens: the file has no text the tokenizer keeps")

    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    with atomic_path(target) as tmp:
        tmp.mkdir()
        np.save(tmp / TokenCache.IDS, np.concatenate(ids_parts).astype(np.int32, copy=False))
        np.save(
            tmp / TokenCache.WORD_START, np.concatenate(start_parts).astype(np.uint8, copy=False)
        )
        np.save(tmp / TokenCache.OFFSETS, offsets)
        s = tokenizer.special_ids
        write_json(
            tmp / TokenCache.META,
            {
                "format": CACHE_FORMAT,
                "key": key,
                "vocab_size": tokenizer.vocab_size,
                "special_ids": {
                    "pad": s.pad,
                    "unk": s.unk,
                    "cls": s.cls,
                    "sep": s.sep,
                    "mask": s.mask,
                },
                "num_documents": len(lengths),
                "num_tokens": int(offsets[-1]),
                "files": file_info,
            },
        )
    return TokenCache(target, reused=False)


# --------------------------------------------------------------------------- datasets


class PackedDataset:
    """MLM sequences packed to exactly ``max_len`` tokens: ``[CLS] tokens... [SEP]``.

    All documents are read as one stream with a ``[SEP]`` between consecutive documents,
    and the stream is cut into pieces of ``max_len - 2`` tokens; a long document simply
    continues into the next sequence. Only the last sequence can be shorter. Every token of
    the cache appears exactly once, in order. A cut can fall right next to a separator, so a
    sequence may begin ``[CLS] [SEP]`` or end ``[SEP] [SEP]``.

    ``dataset[i]`` is a dict of numpy arrays: ``input_ids`` (int64, (T,)), ``word_start``
    (uint8, 0 on special tokens), ``token_type_ids`` (int64, zeros) and ``index`` (int64 scalar).
    """

    def __init__(self, cache: TokenCache, max_len: int):
        if not isinstance(max_len, int) or max_len < 3:
            raise ConfigError(
                f"max_len must be an integer >= 3 ([CLS] + a token + [SEP]), got {max_len!r}"
            )
        self.cache = cache
        self.max_len = max_len
        self._span = max_len - 2
        lengths = cache.doc_lengths()
        # Stream position where document d starts: its first token + one separator per earlier doc.
        self._doc_stream_start = np.asarray(cache.doc_offsets[:-1]) + np.arange(len(lengths))
        self._doc_lengths = lengths
        self._stream_len = cache.num_tokens + max(cache.num_documents - 1, 0)
        self._len = -(-self._stream_len // self._span)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = _check_index(index, self._len)
        specials = self.cache.special_ids
        lo = index * self._span
        hi = min(lo + self._span, self._stream_len)
        positions = np.arange(lo, hi)
        doc = np.searchsorted(self._doc_stream_start, positions, side="right") - 1
        is_sep = positions - self._doc_stream_start[doc] == self._doc_lengths[doc]
        token = np.minimum(
            positions - doc, self.cache.num_tokens - 1
        )  # a separator reads any token
        body_ids = np.where(is_sep, specials.sep, self.cache.ids[token]).astype(np.int64)
        body_starts = np.where(is_sep, 0, self.cache.word_start[token]).astype(np.uint8)
        input_ids = np.concatenate([[specials.cls], body_ids, [specials.sep]]).astype(np.int64)
        word_start = np.concatenate([[0], body_starts, [0]]).astype(np.uint8)
        return {
            "input_ids": input_ids,
            "word_start": word_start,
            "token_type_ids": np.zeros_like(input_ids),
            "index": np.int64(index),
        }


class NSPDataset:
    """BERT sentence-pair examples ``[CLS] A [SEP] B [SEP]`` for MLM + next-sentence prediction.

    Each document is cut into near-equal chunks of at most ``max_len - 3`` tokens (chunks of
    one token are dropped); example ``i`` is chunk ``i``. It is split at a random word start
    into A and its continuation; with probability 1/2 the continuation is B (``nsp_label``
    0, "is next", as in Hugging Face), otherwise B is a span of the same length (or the whole
    document, if shorter) from a random *other* document (``nsp_label`` 1). The example
    depends only on ``(seed, i)``. Items are dicts of numpy arrays like :class:`PackedDataset`'s,
    plus ``nsp_label`` (int64 scalar); ``token_type_ids`` are 1 on B and its ``[SEP]``.
    """

    def __init__(self, cache: TokenCache, max_len: int, seed: int = 0):
        if not isinstance(max_len, int) or max_len < 5:
            raise ConfigError(
                f"max_len must be an integer >= 5 ([CLS] A [SEP] B [SEP]), got {max_len!r}"
            )
        if cache.num_documents < 2:
            raise LanistrError(
                f"next-sentence prediction needs at least 2 documents, the corpus has {cache.num_documents}"
            )
        self.cache = cache
        self.max_len = max_len
        self.seed = int(seed)
        budget = max_len - 3
        lengths = cache.doc_lengths()
        pieces = -(-lengths // budget)  # (D,) chunks per document
        doc = np.repeat(np.arange(len(lengths)), pieces)
        k = np.arange(len(doc)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        n, length = pieces[doc], lengths[doc]
        start, end = k * length // n, (k + 1) * length // n
        keep = end - start >= 2
        self._doc = doc[keep]
        self._start = start[keep]  # relative to the document
        self._end = end[keep]
        self._doc_lengths = lengths
        if len(self._doc) == 0:
            raise LanistrError(
                "next-sentence prediction needs documents of at least 2 tokens; none found"
            )

    def __len__(self) -> int:
        return len(self._doc)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = _check_index(index, len(self))
        cache, specials = self.cache, self.cache.special_ids
        rng = np.random.default_rng([self.seed, _NSP_STREAM, index])
        doc = int(self._doc[index])
        base = int(cache.doc_offsets[doc])
        lo, hi = base + int(self._start[index]), base + int(self._end[index])
        # Split at a word start so that B does not begin inside a word (unless there is none).
        starts = np.flatnonzero(np.asarray(cache.word_start[lo + 1 : hi])) + 1
        cut = lo + int(rng.choice(starts) if len(starts) else rng.integers(1, hi - lo))
        is_next = bool(rng.random() < 0.5)
        if is_next:
            b_lo, b_hi = cut, hi
        else:
            other = int(rng.integers(cache.num_documents - 1))
            other += other >= doc  # uniform over the other documents
            need = hi - cut
            o_lo, o_len = int(cache.doc_offsets[other]), int(self._doc_lengths[other])
            if o_len <= need:
                b_lo, b_hi = o_lo, o_lo + o_len
            else:
                starts = np.flatnonzero(
                    np.asarray(cache.word_start[o_lo : o_lo + o_len - need + 1])
                )
                offset = int(rng.choice(starts) if len(starts) else rng.integers(o_len - need + 1))
                b_lo, b_hi = o_lo + offset, o_lo + offset + need
        a_ids, b_ids = cache.ids[lo:cut], cache.ids[b_lo:b_hi]
        input_ids = np.concatenate(
            [[specials.cls], a_ids, [specials.sep], b_ids, [specials.sep]]
        ).astype(np.int64)
        word_start = np.concatenate(
            [[0], cache.word_start[lo:cut], [0], cache.word_start[b_lo:b_hi], [0]]
        ).astype(np.uint8)
        token_type_ids = np.zeros_like(input_ids)
        token_type_ids[len(a_ids) + 2 :] = 1
        return {
            "input_ids": input_ids,
            "word_start": word_start,
            "token_type_ids": token_type_ids,
            "nsp_label": np.int64(0 if is_next else 1),
            "index": np.int64(index),
        }


def _check_index(index, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} examples")
    return index


# --------------------------------------------------------------------------- masking


class MLMCollator:
    """Pad a batch and mask it for masked-language modelling.

    Selection: of the ``n`` non-special tokens of an example, exactly
    ``max(1, floor(mlm_probability * n + 0.5))`` are selected (not Bernoulli). With
    ``whole_word_mask`` whole words (a word-start piece and the pieces after it, from the
    examples' ``word_start``) are taken in random order while they fit the budget, as in
    Hugging Face's whole-word collator, so a long word is never split and the count can fall
    short of the budget by less than one word (examples without ``word_start`` are masked
    token by token). Each selected token becomes ``[MASK]`` with
    probability 0.8, a random non-special token with 0.1, and stays unchanged with 0.1.

    The random stream of an example is seeded from ``(seed, epoch, index)`` only, so an
    example gets the same mask in any batch, on any rank, after any resume.

    Returns int64 tensors: ``input_ids``, ``attention_mask`` (1 = token), ``token_type_ids``,
    ``mlm_labels`` (the original id where selected, -100 elsewhere), all (B, T) padded to the
    longest example; and ``nsp_labels`` (B,) when the examples carry ``nsp_label``.
    """

    def __init__(
        self,
        special_ids: SpecialIds,
        vocab_size: int,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = True,
        seed: int = 0,
    ):
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(
                f"mlm_probability must be between 0 and 1 (exclusive), got {mlm_probability}"
            )
        special = np.asarray(special_ids.all, dtype=np.int64)
        if vocab_size <= len(special) or special.max() >= vocab_size:
            raise ConfigError(
                f"vocab_size={vocab_size} is too small for special token ids {special.tolist()}"
            )
        self.special_ids = special_ids
        self.vocab_size = int(vocab_size)
        self.mlm_probability = float(mlm_probability)
        self.whole_word_mask = bool(whole_word_mask)
        self.seed = int(seed)
        self.epoch = 0
        self._special = special
        self._regular = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special)

    @classmethod
    def for_cache(cls, cache: TokenCache, **kwargs) -> MLMCollator:
        return cls(cache.special_ids, cache.vocab_size, **kwargs)

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, **kwargs) -> MLMCollator:
        return cls(tokenizer.special_ids, tokenizer.vocab_size, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used when ``__call__`` gets none (set it in every DataLoader worker's copy)."""
        self.epoch = int(epoch)

    def __call__(
        self,
        examples: Sequence[dict],
        indices: Sequence[int] | None = None,
        epoch: int | None = None,
    ) -> dict[str, torch.Tensor]:
        import torch

        if not examples:
            raise ValueError("MLMCollator got an empty batch")
        if indices is None:
            if any("index" not in ex for ex in examples):
                raise ValueError("MLMCollator needs indices= or an 'index' entry in every example")
            indices = [int(ex["index"]) for ex in examples]
        if len(indices) != len(examples):
            raise ValueError(f"{len(examples)} examples but {len(indices)} indices")
        epoch = self.epoch if epoch is None else int(epoch)

        width = max(len(ex["input_ids"]) for ex in examples)
        batch = len(examples)
        input_ids = np.full((batch, width), self.special_ids.pad, dtype=np.int64)
        attention_mask = np.zeros((batch, width), dtype=np.int64)
        token_type_ids = np.zeros((batch, width), dtype=np.int64)
        labels = np.full((batch, width), IGNORE_INDEX, dtype=np.int64)
        for b, (ex, index) in enumerate(zip(examples, indices)):
            ids = np.asarray(ex["input_ids"], dtype=np.int64)
            masked, row_labels = self.mask(ids, ex.get("word_start"), int(index), epoch)
            n = len(ids)
            input_ids[b, :n] = masked
            labels[b, :n] = row_labels
            attention_mask[b, :n] = 1
            if "token_type_ids" in ex:
                token_type_ids[b, :n] = ex["token_type_ids"]
        out = {
            "input_ids": torch.from_numpy(input_ids),  # (B, T)
            "attention_mask": torch.from_numpy(attention_mask),  # (B, T)
            "token_type_ids": torch.from_numpy(token_type_ids),  # (B, T)
            "mlm_labels": torch.from_numpy(labels),  # (B, T)
        }
        has_nsp = ["nsp_label" in ex for ex in examples]
        if any(has_nsp):
            if not all(has_nsp):
                raise ValueError("some examples of the batch have an nsp_label and some do not")
            out["nsp_labels"] = torch.tensor(
                [int(ex["nsp_label"]) for ex in examples], dtype=torch.int64
            )
        return out

    def mask(
        self, input_ids: np.ndarray, word_start: np.ndarray | None, index: int, epoch: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masked copy of one example's ids and its labels (-100 where not predicted)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch, index])
        special = np.isin(ids, self._special)
        candidates = ~special
        n = int(candidates.sum())
        labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
        if n == 0:
            return ids.copy(), labels
        budget = max(1, int(np.floor(self.mlm_probability * n + 0.5)))

        if self.whole_word_mask and word_start is not None:
            selected = self._select_words(candidates, special, np.asarray(word_start), budget, rng)
        else:
            positions = np.flatnonzero(candidates)
            selected = np.zeros(len(ids), dtype=bool)
            selected[positions[rng.permutation(n)[:budget]]] = True

        where = np.flatnonzero(selected)
        labels[where] = ids[where]
        action = rng.random(len(where))  # < 0.8 mask, < 0.9 random token, else unchanged
        random_tokens = self._regular[rng.integers(len(self._regular), size=len(where))]
        masked = ids.copy()
        masked[where[action < 0.8]] = self.special_ids.mask
        replace = (action >= 0.8) & (action < 0.9)
        masked[where[replace]] = random_tokens[replace]
        return masked, labels

    @staticmethod
    def _select_words(candidates, special, word_start, budget, rng) -> np.ndarray:
        # A word starts at a word-start piece, or at any piece right after a special token
        # (a packed sequence can begin inside a word).
        after_special = np.concatenate([[True], special[:-1]])
        starts = candidates & ((word_start != 0) | after_special)
        word = np.cumsum(starts) - 1  # word index of every candidate piece
        num_words = int(starts.sum())
        sizes = np.bincount(word[candidates], minlength=num_words)
        order = rng.permutation(num_words)
        total = np.cumsum(sizes[order])
        k = int(np.searchsorted(total, budget, side="right"))  # longest prefix that fits
        chosen = np.zeros(num_words, dtype=bool)
        chosen[order[:k]] = True
        room = budget - (int(total[k - 1]) if k else 0)
        for w in order[k:]:  # then any later word that still fits, until the budget is met
            if room == 0:
                break
            if sizes[w] <= room:
                chosen[w] = True
                room -= int(sizes[w])
        return candidates & chosen[np.maximum(word, 0)]
