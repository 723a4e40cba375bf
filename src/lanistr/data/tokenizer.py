"""WordPiece tokenizer: deterministic training and BERT-compatible encoding.

Built on the ``tokenizers`` library. A :class:`Tokenizer` loads either its own
``tokenizer.json`` or a BERT ``vocab.txt`` (+ optional ``tokenizer_config.json``), so a
converted Hugging Face BERT/MiniLM directory works and gives the same ids as
``transformers.BertTokenizerFast``.

Special tokens and the ``[CLS] A [SEP] B [SEP]`` layout are added here in Python, not by the
backend's post-processor, so truncation is exact and countable (``Batch.num_truncated``).

Determinism of training: the ``tokenizers`` WordPiece trainer numbers the ``##x``
continuation characters in hash order, and merge ties are broken by those numbers, so the
same corpus gives a different vocabulary on every run. :func:`train_tokenizer` computes
the continuation characters itself and hands them to the trainer, sorted, right after the
special tokens; then every id is fixed before the first merge and the trainer is
deterministic. The vocabulary is then renumbered (specials, characters, ``##`` characters,
merged pieces in merge order) and the WordPiece model rebuilt with only the five real
special tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lanistr.errors import ConfigError, DataError, LanistrError
from lanistr.io import write_json, write_text

if TYPE_CHECKING:  # torch is imported lazily: `lanistr tokenizer` needs no torch
    import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUING_PREFIX = "##"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
# Number of special tokens around a single text and a pair: [CLS] A [SEP] / [CLS] A [SEP] B [SEP]
_SINGLE_SPECIALS = 2
_PAIR_SPECIALS = 3


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the five BERT special tokens (they are 0..4 for a tokenizer lanistr trained,
    0/100/101/102/103 for an uncased Hugging Face BERT vocabulary)."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    @property
    def all(self) -> tuple[int, ...]:
        """The five ids, sorted."""
        return tuple(sorted({self.pad, self.unk, self.cls, self.sep, self.mask}))


@dataclass
class Batch:
    """Encoded texts. Tensors are int64 and (B, T); ``attention_mask`` is 1 on real tokens.

    ``word_ids[b][t]`` is the index of the word token ``t`` came from (words of the second
    text of a pair count from 0 again, as in Hugging Face), None for special and padding
    tokens. ``num_truncated`` counts the examples that were cut to ``max_length``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    word_ids: list[list[int | None]]
    num_truncated: int = 0

    def __getitem__(self, key: str):
        return getattr(self, key)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The three tensors a model's forward takes."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


# --------------------------------------------------------------------------- the tokenizer


class Tokenizer:
    """A BERT-style WordPiece tokenizer. Build one with :meth:`from_pretrained` or
    :func:`train_tokenizer`; ``Tokenizer(backend)`` wraps a ``tokenizers.Tokenizer``."""

    def __init__(self, backend, source: str = "<memory>"):
        backend.no_truncation()  # a Hugging Face tokenizer.json may enable these; we do both ourselves
        backend.no_padding()
        self._backend = backend
        self.source = source
        ids = {}
        for name in SPECIAL_TOKENS:
            token_id = backend.token_to_id(name)
            if token_id is None:
                raise LanistrError(
                    f"{source}: the vocabulary has no {name} token "
                    f"(lanistr needs all of {' '.join(SPECIAL_TOKENS)})"
                )
            ids[name] = token_id
        self.special_ids = SpecialIds(
            pad=ids["[PAD]"],
            unk=ids["[UNK]"],
            cls=ids["[CLS]"],
            sep=ids["[SEP]"],
            mask=ids["[MASK]"],
        )

    # ----------------------------------------------------------------- loading and saving

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load ``DIR/tokenizer.json`` or, failing that, a BERT ``DIR/vocab.txt`` with the
        casing from ``DIR/tokenizer_config.json`` (``do_lower_case``, default true).
        ``path`` may also name one of those two files directly."""
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if path.is_file():
            directory, names = path.parent, [path.name]
        elif path.is_dir():
            directory, names = path, [TOKENIZER_FILE, VOCAB_FILE]
        else:
            raise LanistrError(f"{path}: no such tokenizer directory or file")
        for name in names:
            file = directory / name
            if not file.is_file():
                continue
            if name.endswith(".json"):
                try:
                    backend = Backend.from_file(str(file))
                except Exception as exc:  # the Rust error says what is wrong with the JSON
                    raise DataError(file, None, f"not a valid tokenizer.json: {exc}") from None
                return cls(backend, source=str(file))
            return cls(_bert_backend_from_vocab(file, _read_config(directory)), source=str(file))
        raise LanistrError(f"{path}: found neither {TOKENIZER_FILE} nor {VOCAB_FILE}")

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json``, ``vocab.txt`` and ``tokenizer_config.json`` into
        ``directory`` (each file atomically; other files there are left alone)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / TOKENIZER_FILE, self._backend.to_str(pretty=True) + "\n")
        write_text(directory / VOCAB_FILE, "".join(t + "\n" for t in self.vocab_tokens()))
        write_json(
            directory / CONFIG_FILE,
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": self.lowercase,
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
        )
        return directory

    def to_json(self) -> str:
        """The backend's ``tokenizer.json`` content (deterministic; used as a cache key)."""
        return self._backend.to_str()

    # ----------------------------------------------------------------- properties

    @property
    def backend(self):
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def pad_id(self) -> int:
        return self.special_ids.pad

    @property
    def unk_id(self) -> int:
        return self.special_ids.unk

    @property
    def cls_id(self) -> int:
        return self.special_ids.cls

    @property
    def sep_id(self) -> int:
        return self.special_ids.sep

    @property
    def mask_id(self) -> int:
        return self.special_ids.mask

    @property
    def lowercase(self) -> bool:
        """Whether the normalizer lowercases (read from the backend's configuration)."""
        normalizer = json.loads(self._backend.to_str()).get("normalizer") or {}
        stack = [normalizer]
        while stack:
            node = stack.pop()
            if node.get("type") == "Lowercase" or node.get("lowercase"):
                return True
            stack.extend(node.get("normalizers", []))
        return False

    def vocab_tokens(self) -> list[str]:
        """Tokens in id order (a gap in the ids, which lanistr never makes, reads ``[unusedN]``)."""
        return [self._backend.id_to_token(i) or f"[unused{i}]" for i in range(self.vocab_size)]

    # ----------------------------------------------------------------- encoding

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text``, without special tokens."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            token_id = self._backend.token_to_id(tokens)
            return self.unk_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> str | list[str]:
        """Token strings of ``ids`` (an int, a list, or a tensor/array)."""
        ids = _as_list(ids)
        if isinstance(ids, int):
            return self._token(ids)
        return [self._token(i) for i in ids]

    def _token(self, token_id: int) -> str:
        token = self._backend.id_to_token(int(token_id))
        if token is None:
            raise LanistrError(
                f"token id {token_id} is outside the vocabulary (size {self.vocab_size})"
            )
        return token

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; ``##`` continuations are joined to the previous piece."""
        ids = _as_list(ids)
        if isinstance(ids, int):
            ids = [ids]
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        max_length: int = 512,
        padding: bool | str = True,
        truncation: bool | str = True,
    ) -> Batch:
        """Encode texts (or text pairs) as ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]``.

        ``padding``: True or ``"longest"`` pads to the longest example, ``"max_length"``
        to ``max_length``, False requires equal lengths. ``truncation``: cut an over-long
        example to ``max_length`` (for a pair, tokens come off the longer text first, as in
        Hugging Face's ``longest_first``); True or ``"head"`` keeps a text's first tokens,
        ``"head_tail"`` its first quarter and last three quarters of the room (Sun et al.
        2019, "How to Fine-Tune BERT for Text Classification": 128 + 382 of 510 tokens);
        False raises a :class:`LanistrError` instead.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(text_pairs) != len(texts):
                raise LanistrError(
                    f"encode: {len(texts)} texts but {len(text_pairs)} text_pairs; give one pair per text"
                )
        _check_max_length(max_length, pair=text_pairs is not None)
        firsts = self._backend.encode_batch(texts, add_special_tokens=False)
        seconds = (
            None
            if text_pairs is None
            else self._backend.encode_batch(text_pairs, add_special_tokens=False)
        )
        return self._assemble(firsts, seconds, max_length, padding, truncation)

    def encode_words(
        self,
        words: Sequence[Sequence[str]],
        max_length: int = 512,
        padding: bool | str = True,
        truncation: bool | str = True,
    ) -> Batch:
        """Encode pre-split words (one list per example), for tagging: ``word_ids`` maps
        every token back to the index of its word in the input list."""
        words = [list(w) for w in words]
        _check_max_length(max_length, pair=False)
        encodings = self._backend.encode_batch(
            words, is_pretokenized=True, add_special_tokens=False
        )
        return self._assemble(encodings, None, max_length, padding, truncation)

    def encode_documents(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Token ids (int32) and word-start bits (uint8, 1 on the first piece of every word)
        of each text, without special tokens; used to build pretraining caches."""
        out = []
        for enc in self._backend.encode_batch(list(texts), add_special_tokens=False):
            ids = np.asarray(enc.ids, dtype=np.int32)
            words = np.asarray(enc.word_ids, dtype=np.float64)  # None -> nan: its own word
            start = np.ones(len(ids), dtype=np.uint8)
            if len(ids) > 1:
                same = words[1:] == words[:-1]  # nan never equals: specials start a word
                start[1:] = ~same
            out.append((ids, start))
        return out

    def _assemble(self, firsts, seconds, max_length, padding, truncation) -> Batch:
        import torch

        keep = _truncation_rule(truncation)
        rows_ids: list[list[int]] = []
        rows_types: list[list[int]] = []
        rows_words: list[list[int | None]] = []
        num_truncated = 0
        cls_id, sep_id = self.cls_id, self.sep_id
        for index, first in enumerate(firsts):
            a_ids, a_words = first.ids, first.word_ids
            if seconds is None:
                budget = max_length - _SINGLE_SPECIALS
                length = len(a_ids) + _SINGLE_SPECIALS
                keep_a, keep_b = min(len(a_ids), budget), 0
                b_ids, b_words = [], []
            else:
                b_ids, b_words = seconds[index].ids, seconds[index].word_ids
                budget = max_length - _PAIR_SPECIALS
                length = len(a_ids) + len(b_ids) + _PAIR_SPECIALS
                keep_a, keep_b = _longest_first(len(a_ids), len(b_ids), budget)
            if length > max_length:
                if not truncation:
                    raise LanistrError(
                        f"example {index}: {length} tokens is longer than max_length={max_length} "
                        "(pass truncation=True to cut it, or raise max_length)"
                    )
                num_truncated += 1
            ids = [cls_id, *keep(a_ids, keep_a), sep_id]
            types = [0] * len(ids)
            word_ids = [None, *keep(a_words, keep_a), None]
            if seconds is not None:
                ids += [*keep(b_ids, keep_b), sep_id]
                types += [1] * (keep_b + 1)
                word_ids += [*keep(b_words, keep_b), None]
            rows_ids.append(ids)
            rows_types.append(types)
            rows_words.append(word_ids)

        lengths = [len(r) for r in rows_ids]
        if padding is True or padding == "longest":
            width = max(lengths, default=0)
        elif padding == "max_length":
            width = max_length
        elif padding is False:
            if len(set(lengths)) > 1:
                raise LanistrError(
                    f"padding=False but the examples have different lengths ({min(lengths)} to "
                    f"{max(lengths)} tokens); use padding=True"
                )
            width = max(lengths, default=0)
        else:
            raise ConfigError(
                f"padding must be True, False, 'longest' or 'max_length', got {padding!r}"
            )

        batch = len(rows_ids)
        input_ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros((batch, width), dtype=np.int64)
        attention_mask = np.zeros((batch, width), dtype=np.int64)
        for b, (ids, types) in enumerate(zip(rows_ids, rows_types)):
            n = len(ids)
            input_ids[b, :n] = ids
            token_type_ids[b, :n] = types
            attention_mask[b, :n] = 1
            rows_words[b] += [None] * (width - n)
        return Batch(
            input_ids=torch.from_numpy(input_ids),  # (B, T)
            attention_mask=torch.from_numpy(attention_mask),  # (B, T)
            token_type_ids=torch.from_numpy(token_type_ids),  # (B, T)
            word_ids=rows_words,
            num_truncated=num_truncated,
        )

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
            f"source={self.source!r})"
        )


def _as_list(ids):
    if hasattr(ids, "tolist"):  # torch tensor or numpy array
        ids = ids.tolist()
    return ids


def _check_max_length(max_length: int, pair: bool) -> None:
    least = _PAIR_SPECIALS if pair else _SINGLE_SPECIALS
    if not isinstance(max_length, int) or max_length < least:
        raise ConfigError(
            f"max_length must be an integer >= {least} (room for the special tokens), got {max_length!r}"
        )


#: the part of a head+tail cut's room that goes to the head (Sun et al. 2019: 128 of 510)
HEAD_TAIL_HEAD = 0.25
TRUNCATIONS = ("head", "head_tail")


def _truncation_rule(truncation: bool | str):
    """``keep(seq, n)``: the ``n`` items of ``seq`` that a cut keeps (all of them when it fits)."""
    if truncation is False or truncation is True or truncation == "head":
        return lambda seq, n: list(seq[:n])
    if truncation != "head_tail":
        raise ConfigError(f"truncation must be True, False, 'head' or 'head_tail', got {truncation!r}")

    def head_tail(seq, n):
        if len(seq) <= n:
            return list(seq)
        head = int(n * HEAD_TAIL_HEAD)
        return [*seq[:head], *seq[len(seq) - (n - head):]]

    return head_tail


def _longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths to keep of a pair so that they fit ``budget``, exactly as the ``tokenizers``
    ``longest_first`` strategy (and so ``BertTokenizerFast``) does it: the shorter text is
    kept whole if the longer one can take the rest; otherwise the shorter gets half the
    budget and the longer the other (larger) half; on equal lengths the second is "longer"."""
    if len_a + len_b <= budget:
        return len_a, len_b
    swap = len_a > len_b
    short, long = (len_b, len_a) if swap else (len_a, len_b)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short = budget // 2
        long = short + budget % 2
    return (long, short) if swap else (short, long)


# --------------------------------------------------------------------------- building backends


def _read_config(directory: Path) -> dict:
    file = directory / CONFIG_FILE
    if not file.is_file():
        return {}
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(file, None, f"not a valid JSON file: {exc}") from None
    return config if isinstance(config, dict) else {}


def _bert_pipeline(backend, lowercase: bool, strip_accents=None, chinese_chars: bool = True):
    """Give ``backend`` BERT's normalizer, pre-tokenizer, post-processor and decoder."""
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors

    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=chinese_chars,
        strip_accents=strip_accents,  # None: strip accents exactly when lowercasing
        lowercase=lowercase,
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    if cls_id is not None and sep_id is not None:
        # Not used by Tokenizer.encode (which adds specials itself) but kept so that the saved
        # tokenizer.json behaves like BERT's in other tools.
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    backend.decoder = decoders.WordPiece(prefix=CONTINUING_PREFIX)
    backend.add_special_tokens(
        [AddedToken(t, special=True) for t in SPECIAL_TOKENS if backend.token_to_id(t) is not None]
    )
    return backend


def _wordpiece_backend(
    vocab: dict[str, int], lowercase: bool, strip_accents=None, chinese_chars=True
):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    model = models.WordPiece(
        vocab=vocab,
        unk_token="[UNK]",
        continuing_subword_prefix=CONTINUING_PREFIX,
        max_input_chars_per_word=100,
    )
    return _bert_pipeline(Backend(model), lowercase, strip_accents, chinese_chars)


def _bert_backend_from_vocab(file: Path, config: dict):
    try:
        lines = file.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(file, None, f"not valid UTF-8: {exc.reason}") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        token = token.rstrip("\r")
        vocab.setdefault(token, index)  # like Hugging Face's load_vocab: the first id wins
    if not vocab:
        raise DataError(file, None, "empty vocabulary")
    return _wordpiece_backend(
        vocab,
        lowercase=bool(config.get("do_lower_case", True)),
        strip_accents=config.get("strip_accents"),
        chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
    )


# --------------------------------------------------------------------------- training


def read_corpus(files: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Texts of the documents in ``files``: blank-line-separated blocks of ``.txt`` files,
    the ``text`` field of ``.jsonl`` records. Raises :class:`DataError` for a missing,
    empty or non-UTF-8 file, and when no file has any text."""
    from lanistr.data.readers import read_documents

    files = _file_list(files)
    texts = [doc.text for f in files for doc in read_documents(f) if doc.text.strip()]
    if not texts:
        raise DataError(
            files[0] if len(files) == 1 else ", ".join(map(str, files)), None, "no text to train on"
        )
    return texts


def _file_list(files) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    files = [Path(f) for f in files]
    if not files:
        raise LanistrError("no input files given")
    return files


def train_tokenizer(
    files: str | os.PathLike | Iterable[str | os.PathLike],
    vocab_size: int,
    output_dir: str | os.PathLike | None,
    lowercase: bool = True,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a WordPiece vocabulary of at most ``vocab_size`` tokens on ``files`` and save it
    to ``output_dir`` (skipped when None). The same corpus and settings always give the same
    ``tokenizer.json``, byte for byte. Special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]``
    have ids 0..4."""
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(
            f"vocab_size must be an integer > {len(SPECIAL_TOKENS)}, got {vocab_size!r}"
        )
    if not isinstance(min_frequency, int) or min_frequency < 0:
        raise ConfigError(f"min_frequency must be an integer >= 0, got {min_frequency!r}")
    texts = read_corpus(files)
    vocab = _train_vocab(texts, vocab_size, lowercase, min_frequency, show_progress)
    tokenizer = Tokenizer(_wordpiece_backend(vocab, lowercase), source="<trained>")
    if output_dir is not None:
        tokenizer.save_pretrained(output_dir)
        tokenizer.source = str(Path(output_dir) / TOKENIZER_FILE)
    return tokenizer


def _train_vocab(
    texts: list[str], vocab_size: int, lowercase: bool, min_frequency: int, show_progress: bool
) -> dict[str, int]:
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Every character that occurs inside a word (not first) gets a "##x" token from the trainer;
    # registering them up front, sorted, fixes their ids before any merge (see module docstring).
    # Whitespace-separated chunks are deduplicated first; the pre-tokenizer then splits each
    # unique chunk at punctuation (twice as fast as pre-tokenizing every text).
    chunks: set[str] = set()
    for text in texts:
        chunks.update(normalizer.normalize_str(text).split())
    inner: set[str] = set()
    for chunk in chunks:
        for word, _ in pre_tokenizer.pre_tokenize_str(chunk):
            inner.update(word[1:])
    continuations = [CONTINUING_PREFIX + c for c in sorted(inner)]

    backend = Backend(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuations],
        continuing_subword_prefix=CONTINUING_PREFIX,
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    trained = backend.get_vocab(with_added_tokens=False)

    # Renumber: specials, single characters, "##" characters, then merged pieces in merge order.
    def group(token: str) -> int:
        if len(token) == 1:
            return 0
        if token.startswith(CONTINUING_PREFIX) and len(token) == len(CONTINUING_PREFIX) + 1:
            return 1
        return 2

    rest = sorted(
        (t for t in trained if t not in SPECIAL_TOKENS), key=lambda t: (group(t), trained[t])
    )
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS, *rest])}
