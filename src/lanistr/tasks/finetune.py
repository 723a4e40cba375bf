"""Fine-tuning an encoder for sequence classification (``classify``) or token tagging (``tag``)
on the shared training loop, and inference with the result (:class:`Predictor`).

A run config has the sections ``task``, ``init``, ``model``, ``data``, ``finetune`` and
``train`` (see ``lanistr finetune --help`` and ``examples/finetune_*.yaml``). The data is
read and tokenised once, up front (a batch only pads pre-computed ids to its longest
example). The label set is the sorted set of training labels; it is stored in the
checkpoint's ``config.json`` (``labels``), and ``finetune.json`` beside it records the task
and the data fields so ``lanistr evaluate`` / ``predict`` read files the same way.

Losses follow the loop's contract: a sum over the batch, divided by a global count. With
``class_weights: balanced`` the sum is weighted and the count is the sum of the batch's
weights, so the normalisation stays exact over micro-batches and ranks.

New task kinds register a builder in :data:`TASKS` (``task: NAME`` in the config).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import LanistrConfig, TrainConfig, from_dict
from lanistr.data.tokenizer import Tokenizer
from lanistr.distributed import DistContext
from lanistr.errors import ConfigError, DataError, LanistrError
from lanistr.io import write_json
from lanistr.metrics import entity_counts, entity_scores, is_bio, scores_from_confusion
from lanistr.tasks.trainer import Task, default_param_groups

log = logging.getLogger("lanistr")

IGNORE = -100
META_FILE = "finetune.json"
_CHUNK = 512  # examples tokenised per call


# --------------------------------------------------------------------------- configuration


@dataclass
class FinetuneDataConfig:
    """Where the examples are and how to read them."""

    train: str | None = None
    eval: str | None = None  # held-out set for model selection / early stopping
    test: str | None = None  # evaluated once, with the final model
    eval_fraction: float = 0.0  # without `eval`: hold out this part of `train` (seeded)
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    max_len: int = 128
    tokenizer: str | None = None  # default: the tokenizer of `init`

    def __post_init__(self) -> None:
        if self.max_len < 4:
            raise ConfigError(f"data.max_len={self.max_len} must be >= 4")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")


@dataclass
class FinetuneOptions:
    """The ``finetune`` section."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the embeddings and the first N encoder layers
    layer_lr_decay: float = 1.0  # layer l (of L) trains at lr * decay ** (L + 1 - l)
    class_weights: Literal["none", "balanced"] = "none"
    patience: int = 0  # stop after this many evaluations without improvement (0 = never)
    metric: str | None = None  # model-selection metric; default per task

    def __post_init__(self) -> None:
        if self.freeze_layers < 0:
            raise ConfigError(f"finetune.freeze_layers={self.freeze_layers} must be >= 0")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"finetune.layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        if self.patience < 0:
            raise ConfigError(f"finetune.patience={self.patience} must be >= 0")


#: Fine-tuning defaults that differ from the loop's (used where the config does not say).
TRAIN_DEFAULTS = {"epochs": 3.0, "max_steps": 0, "batch_size": 16, "warmup_ratio": 0.1}
LR_PRETRAINED, LR_SCRATCH = 5e-5, 5e-4


# --------------------------------------------------------------------------- reading data


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


def _resolve(path: str) -> Path:
    return Path(path).expanduser()


def read_labelled_texts(path: str | Path, text_field: str, label_field: str | None,
                        pair_field: str | None = None):
    """``(texts, pairs | None, labels | None, lines)`` of a JSONL/CSV/TSV file; labels are
    strings (a JSON number ``1`` becomes ``"1"``)."""
    from lanistr.data.readers import read_records

    fields = [text_field] + ([pair_field] if pair_field else []) + (
        [label_field] if label_field else [])
    records = read_records(_resolve(path), fields)
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
                 lines: Sequence[int] | None = None):
    """Token ids (int32, no padding) of every text (pair), its segment ids (pairs only),
    and how many examples were cut to ``max_len``. With ``truncate=False`` an over-long
    example raises a DataError naming its file and line."""
    ids: list[np.ndarray] = []
    types: list[np.ndarray] | None = [] if pairs is not None else None
    truncated = 0
    for start in range(0, len(texts), _CHUNK):
        a = list(texts[start:start + _CHUNK])
        b = None if pairs is None else list(pairs[start:start + _CHUNK])
        batch = tokenizer.encode(a, b, max_length=max_len, padding=True, truncation=True)
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


def _report_truncation(data: Encoded, limit: int | str, report: dict) -> None:
    """Log and record (in ``report``: file -> (truncated, examples)) how many were cut;
    ``limit`` is max_len, or a description such as "hierarchical.max_segments=16"."""
    report[data.path] = (data.num_truncated, len(data))
    if data.num_truncated:
        limit = f"max_len={limit}" if isinstance(limit, int) else limit
        log.warning("%s: %d of %d examples truncated to %s", data.path,
                    data.num_truncated, len(data), limit)


# --------------------------------------------------------------------------- batching


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


def _pad_targets(targets: Sequence[np.ndarray], width: int) -> torch.Tensor:
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


# --------------------------------------------------------------------------- tasks


class FinetuneTask(Task):
    """Shared by the fine-tuning tasks: pre-tokenised data, length-sorted evaluation,
    optional class weights, layer-wise learning-rate decay, tokenizer + metadata saving."""

    kind = ""
    metrics: tuple[str, ...] = ()
    #: file -> (examples truncated to max_len, examples), filled in by the task builder
    truncation: dict[str, tuple[int, int]]

    def __init__(self, train: Encoded, eval: Encoded | None, labels: list[str],
                 tokenizer: Tokenizer, options: FinetuneOptions, meta: dict,
                 eval_batch_size: int = 32):
        self.train_data, self.eval_data = train, eval
        self.labels, self.tokenizer, self.options, self.meta = labels, tokenizer, options, meta
        self.eval_batch_size = eval_batch_size
        self.truncation = {}
        self.class_weight = (torch.tensor(balanced_weights(self.label_counts()), dtype=torch.float32)
                             if options.class_weights == "balanced" else None)
        metric = options.metric or self.default_metric()
        if metric not in self.available_metrics():
            raise ConfigError(f"finetune.metric={metric!r} is not computed for task "
                              f"{self.kind!r} (choose from {', '.join(self.available_metrics())})")
        self.best_metric = metric if eval is not None else None
        self.greater_is_better = metric != "loss"
        self.patience = options.patience

    def default_metric(self) -> str:
        raise NotImplementedError

    def available_metrics(self) -> tuple[str, ...]:
        return self.metrics

    def label_counts(self) -> np.ndarray:
        raise NotImplementedError

    def train_size(self) -> int:
        return len(self.train_data)

    def eval_batches(self, rank, world_size):
        if self.eval_data is None:
            return
        order = np.argsort([len(x) for x in self.eval_data.ids], kind="stable")
        mine = order[rank::world_size].tolist()
        for i in range(0, len(mine), self.eval_batch_size):
            yield self.make_batch(self.eval_data, mine[i:i + self.eval_batch_size])

    def collate(self, indices, epoch):
        return self.make_batch(self.train_data, indices)

    def make_batch(self, data: Encoded, indices: list[int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _weighted_count(self, targets: torch.Tensor) -> float:
        kept = targets[targets != IGNORE]
        if self.class_weight is None:
            return float(kept.numel())
        return float(self.class_weight.to(kept.device)[kept].double().sum())

    def counts(self, batch):
        return {"loss": self._weighted_count(batch["labels"])}

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, weighted: bool = True):
        weight = self.class_weight.to(logits.device) if (
            weighted and self.class_weight is not None) else None
        return F.cross_entropy(logits.float(), targets, weight=weight, reduction="sum",
                               ignore_index=IGNORE)

    def param_groups(self, model: nn.Module, train: TrainConfig) -> list[dict]:
        decay = self.options.layer_lr_decay
        if decay == 1.0:
            return default_param_groups(model, train.weight_decay)
        return layer_decay_groups(model, train.lr, train.weight_decay, decay)

    def save_extra(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)
        write_json(Path(directory) / META_FILE, self.meta)


class ClassificationTask(FinetuneTask):
    kind = "classify"
    metrics = ("accuracy", "macro_f1", "loss")

    def default_metric(self) -> str:
        return "macro_f1"

    def label_counts(self):
        return np.bincount(self.train_data.targets, minlength=len(self.labels))

    def make_batch(self, data, indices):
        batch = pad_batch([data.ids[i] for i in indices], self.tokenizer.pad_id,
                          None if data.types is None else [data.types[i] for i in indices])
        batch["labels"] = torch.from_numpy(data.targets[indices])
        return batch

    def _logits(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits

    def loss_sums(self, model, batch):
        return {"loss": self._loss(self._logits(model, batch), batch["labels"])}

    def eval_sums(self, model, batch):
        logits = self._logits(model, batch).float()
        y = batch["labels"]
        k = len(self.labels)
        cm = torch.bincount(y * k + logits.argmax(-1), minlength=k * k).reshape(k, k)
        return {"confusion": cm.double(), "loss_sum": self._loss(logits, y, weighted=False),
                "count": torch.tensor(float(y.numel()))}

    def finalize_metrics(self, sums):
        scores = scores_from_confusion(sums["confusion"].numpy(), self.labels)
        return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                "loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}


class TaggingTask(FinetuneTask):
    kind = "tag"
    metrics = ("token_accuracy", "loss")

    def __init__(self, train: Encoded, eval: Encoded | None, labels: list[str], *args, **kwargs):
        self.bio = is_bio(labels)
        super().__init__(train, eval, labels, *args, **kwargs)
        self.entity_types = sorted({t[2:] for t in self.labels if t != "O"}) if self.bio else []

    def available_metrics(self):
        return self.metrics + (("entity_f1",) if self.bio else ())

    def default_metric(self) -> str:
        return "entity_f1" if self.bio else "token_accuracy"

    def label_counts(self):
        flat = np.concatenate(self.train_data.targets)
        return np.bincount(flat[flat != IGNORE], minlength=len(self.labels))

    def make_batch(self, data, indices):
        batch = pad_batch([data.ids[i] for i in indices], self.tokenizer.pad_id)
        batch["labels"] = _pad_targets([data.targets[i] for i in indices],
                                       batch["input_ids"].shape[1])
        return batch

    def _logits(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits

    def loss_sums(self, model, batch):
        logits = self._logits(model, batch)  # (B, T, K)
        return {"loss": self._loss(logits.flatten(0, 1), batch["labels"].flatten())}

    def eval_sums(self, model, batch):
        logits = self._logits(model, batch).float()
        y = batch["labels"]
        keep = y != IGNORE
        pred = logits.argmax(-1)
        k = len(self.labels)
        cm = torch.bincount(y[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
        sums = {"confusion": cm.double(),
                "loss_sum": self._loss(logits.flatten(0, 1), y.flatten(), weighted=False),
                "count": keep.sum().double()}
        if self.bio:
            gold = [[self.labels[i] for i in y[b][keep[b]].tolist()] for b in range(len(y))]
            guess = [[self.labels[i] for i in pred[b][keep[b]].tolist()] for b in range(len(y))]
            counts = entity_counts(gold, guess)
            sums["entities"] = torch.tensor(
                np.stack([counts.get(t, np.zeros(3, np.int64)) for t in self.entity_types]),
                dtype=torch.float64)
        return sums

    def finalize_metrics(self, sums):
        scores = scores_from_confusion(sums["confusion"].numpy(), self.labels)
        out = {"token_accuracy": scores["accuracy"],
               "loss": float(sums["loss_sum"]) / max(float(sums["count"]), 1.0)}
        if "entities" in sums:
            rows = sums["entities"].numpy().astype(np.int64)
            out["entity_f1"] = entity_scores(dict(zip(self.entity_types, rows)))["entity_f1"]
        return out


# --------------------------------------------------------------------------- model set-up


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, l for encoder layer l-1, num_layers + 1 for the rest (heads)."""
    if ".embeddings." in f".{name}":
        return 0
    match = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, decay: float):
    """Parameter groups with ``lr * decay ** (L + 1 - depth)`` (ELECTRA/BEiT-style layer-wise
    decay), no weight decay on biases and LayerNorms, frozen parameters left out."""
    top = model.config.num_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = layer_depth(name, model.config.num_layers)
        no_decay = p.ndim < 2 or "norm" in name
        group = groups.setdefault((depth, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr": lr * decay ** (top - depth)})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def freeze(model: nn.Module, embeddings: bool, layers: int) -> int:
    """Set ``requires_grad=False`` on the embeddings (if asked, or when ``layers > 0``) and
    on the first ``layers`` encoder layers; return the number of frozen parameters."""
    if layers > model.config.num_layers:
        raise ConfigError(f"finetune.freeze_layers={layers} exceeds the model's "
                          f"{model.config.num_layers} layers")
    frozen = 0
    for name, p in model.named_parameters():
        depth = layer_depth(name, model.config.num_layers)
        if (depth == 0 and (embeddings or layers > 0)) or 1 <= depth <= layers:
            p.requires_grad_(False)
            frozen += p.numel()
    return frozen


def load_for_finetuning(cls, init: str, labels: list[str], overrides: dict):
    """``cls`` with the encoder weights of checkpoint ``init`` and a head for ``labels``
    (freshly initialised unless the checkpoint already has a head for these labels)."""
    from lanistr.checkpoint import load_state, read_config, read_weights

    saved = read_config(init)
    config = read_config(init, labels=labels, **overrides)
    state = read_weights(init)
    if saved.labels != labels or saved.architecture != cls.__name__:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model = cls(config)
    fresh = load_state(model, state, str(Path(init) / "model.safetensors"))
    if fresh:
        groups = sorted({k.rsplit(".", 1)[0] for k in fresh})
        log.info("initialised %d new tensors (%s)", len(fresh), ", ".join(groups))
    model.config.architecture = cls.__name__
    return model


def build_model(cls, init: str, model_section: dict, tokenizer: Tokenizer, labels: list[str],
                max_len: int):
    if init == "scratch":
        section = {"preset": "mini", **model_section}
        section.setdefault("vocab_size", tokenizer.vocab_size)
        section.setdefault("pad_token_id", tokenizer.pad_id)
        section["labels"] = labels
        config = LanistrConfig.from_any(section)
        config.architecture = cls.__name__
        model = cls(config)
    else:
        if "preset" in model_section:
            raise ConfigError(f"model.preset={model_section['preset']!r} only applies with "
                              "init: scratch; with a checkpoint, `model` overrides fields such "
                              "as pooling, dropout or use_pooler")
        model = load_for_finetuning(cls, init, labels, model_section)
    if model.config.use_pooler and model.config.pooling == "mean" and cls.__name__.startswith(
            "LanistrForSequence"):
        log.warning("model.pooling=mean has no effect while model.use_pooler is true (the BERT "
                    "pooler reads the first token); set model.use_pooler: false for mean pooling")
    where = "model" if init == "scratch" else f"init {init}"
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"{where}: vocab_size={model.config.vocab_size} is smaller than the "
                          f"tokenizer's vocabulary ({tokenizer.vocab_size})")
    if model.config.max_len < max_len:
        raise ConfigError(f"data.max_len={max_len} exceeds the model's max_len="
                          f"{model.config.max_len}")
    return model


# --------------------------------------------------------------------------- task builders


@dataclass
class Setup:
    """What a task builder gets: the parsed sections and the run's context."""

    run: dict
    data: FinetuneDataConfig
    options: FinetuneOptions
    tokenizer: Tokenizer
    init: str
    ctx: DistContext
    seed: int
    eval_batch_size: int
    truncate: bool = True


def _split_eval(train: Encoded, fraction: float, seed: int) -> tuple[Encoded, Encoded]:
    perm = np.random.default_rng([seed, 7]).permutation(len(train))
    n_eval = max(1, int(round(fraction * len(train))))
    if n_eval >= len(train):
        raise ConfigError(f"data.eval_fraction leaves no training examples ({len(train)} in all)")
    held, kept = sorted(perm[:n_eval].tolist()), sorted(perm[n_eval:].tolist())
    return train.subset(kept), train.subset(held)


def _meta(kind: str, data: FinetuneDataConfig) -> dict:
    return {"task": kind, "text_field": data.text_field, "text_pair_field": data.text_pair_field,
            "label_field": data.label_field, "max_len": data.max_len}


def build_classification(s: Setup):
    from lanistr.config import HierarchicalConfig
    from lanistr.nn import LanistrForSequenceClassification
    from lanistr.nn.hierarchical import LanistrForDocumentClassification

    d = s.data
    model_section = s.run.get("model") or {}
    hierarchical = model_section.get("long") == "hierarchical"
    if hierarchical:
        if d.text_pair_field:
            raise ConfigError("model.long=hierarchical classifies single documents; "
                              "remove data.text_pair_field")
        h = from_dict(HierarchicalConfig, model_section.get("hierarchical") or {},
                      "model.hierarchical")
    texts, pairs, labels, lines = read_labelled_texts(d.train, d.text_field, d.label_field,
                                                      d.text_pair_field)
    label_set = sorted(set(labels))
    if len(label_set) < 2:
        raise DataError(d.train, None, f"needs at least two distinct labels in field "
                        f"{d.label_field!r}, found {label_set}")

    def encode(path, texts, pairs, labels, lines) -> Encoded:
        y = label_ids(labels, label_set, path, lines, d.train)
        if hierarchical:
            ids, cut = encode_segmented(s.tokenizer, texts, h)
            return Encoded(str(path), lines, ids, None, y, cut)
        ids, types, cut = encode_texts(s.tokenizer, texts, pairs, d.max_len,
                                       truncate=s.truncate, path=path, lines=lines)
        return Encoded(str(path), lines, ids, types, y, cut)

    report: dict = {}
    limit = f"hierarchical.max_segments={h.max_segments}" if hierarchical else d.max_len
    train = encode(d.train, texts, pairs, labels, lines)
    _report_truncation(train, limit, report)
    if d.eval:
        ev = _encode_file(encode, d.eval, d)
        _report_truncation(ev, limit, report)
    elif d.eval_fraction:
        train, ev = _split_eval(train, d.eval_fraction, s.seed)
    else:
        ev = None
    cls = LanistrForDocumentClassification if hierarchical else LanistrForSequenceClassification
    model = build_model(cls, s.init, model_section, s.tokenizer, label_set,
                        h.segment_len if hierarchical else d.max_len)
    task = ClassificationTask(train, ev, label_set, s.tokenizer, s.options,
                              _meta("classify", d), s.eval_batch_size)
    task.truncation = report
    return model, task


def _encode_file(encode, path, d: FinetuneDataConfig) -> Encoded:
    texts, pairs, labels, lines = read_labelled_texts(path, d.text_field, d.label_field,
                                                      d.text_pair_field)
    return encode(path, texts, pairs, labels, lines)


def build_tagging(s: Setup):
    from lanistr.data.readers import read_conll
    from lanistr.nn import LanistrForTokenClassification

    d = s.data
    sentences = read_conll(_resolve(d.train))
    label_set = sorted({t for sent in sentences for t in sent.tags})

    def encode(path, sents) -> Encoded:
        ids, targets, cut = encode_tagged(s.tokenizer, sents, label_set, d.max_len,
                                          truncate=s.truncate, path=path, train_path=d.train)
        return Encoded(str(path), [x.line for x in sents], ids, None, targets, cut)

    report: dict = {}
    train = encode(d.train, sentences)
    _report_truncation(train, d.max_len, report)
    if d.eval:
        ev = encode(d.eval, read_conll(_resolve(d.eval)))
        _report_truncation(ev, d.max_len, report)
    elif d.eval_fraction:
        train, ev = _split_eval(train, d.eval_fraction, s.seed)
    else:
        ev = None
    model = build_model(LanistrForTokenClassification, s.init, s.run.get("model") or {},
                        s.tokenizer, label_set, d.max_len)
    task = TaggingTask(train, ev, label_set, s.tokenizer, s.options, _meta("tag", d),
                       s.eval_batch_size)
    task.truncation = report
    return model, task


#: task name (the config's ``task``) -> builder of ``(model, Task)``
TASKS: dict[str, Callable[[Setup], tuple[nn.Module, Task]]] = {
    "classify": build_classification,
    "tag": build_tagging,
}


# --------------------------------------------------------------------------- the run


@dataclass
class FinetuneResult:
    model_dir: Path
    steps: int
    stop_reason: str
    eval_metrics: dict
    test_metrics: dict | None = None
    truncated: dict = field(default_factory=dict)  # file -> (truncated, total)


def default_train(pretrained: bool, defaults: dict = TRAIN_DEFAULTS,
                  lr: tuple[float, float] = (LR_PRETRAINED, LR_SCRATCH)) -> dict:
    """Training defaults of a fine-tuning run: a lower learning rate from a checkpoint."""
    return {**defaults, "lr": lr[0] if pretrained else lr[1]}


def prepare_run(run: dict, init_examples: str, other_tasks: list[str] = (),
                role: str = "") -> tuple:
    """Validate the sections of a fine-tuning run (shared by ``finetune`` and ``adapt
    dann``): ``(run with defaults, task kind, init, TrainConfig, FinetuneDataConfig,
    FinetuneOptions, Tokenizer)``. ``role`` names the training data in errors ("source")."""
    from lanistr.tasks.runner import train_section

    kind = run.get("task", "classify")
    if kind not in TASKS:
        raise ConfigError(f"task={kind!r} is not a fine-tuning task (choose from "
                          f"{', '.join([*TASKS, *other_tasks])})")
    init = run.get("init")
    if not isinstance(init, str) or not init:
        raise ConfigError(f"init: give a checkpoint directory ({init_examples}) or `scratch` "
                          "(with a model section and data.tokenizer)")
    if init != "scratch":
        init = str(_resolve(init))
    run = {**run, "task": kind, "train": train_section(run, default_train(init != "scratch"))}
    train = from_dict(TrainConfig, run["train"], "train")
    data = from_dict(FinetuneDataConfig, run.get("data") or {}, "data")
    options = from_dict(FinetuneOptions, run.get("finetune") or {}, "finetune")
    held_out = f"held-out {role + ' ' if role else ''}data"
    if not data.train:
        raise ConfigError(f"data.train: no labelled {role + '-domain ' if role else ''}"
                          "training file given")
    if options.patience and not (data.eval or data.eval_fraction):
        raise ConfigError(f"finetune.patience needs {held_out}: set data.eval or "
                          "data.eval_fraction")
    source = data.tokenizer or (init if init != "scratch" else None)
    if source is None:
        raise ConfigError("init: scratch needs data.tokenizer (a tokenizer directory; train one "
                          "with `lanistr tokenizer train`)")
    return run, kind, init, train, data, options, Tokenizer.from_pretrained(_resolve(source))


def eval_once_per_epoch(run: dict, train: TrainConfig, task, ctx) -> TrainConfig:
    """Where the run config does not set ``train.eval_every``: evaluate once per epoch
    (the value is also written into ``run`` so that the saved run config says it)."""
    if "eval_every" in run["train"]:
        return train
    per_epoch = max(1, task.train_size() // (train.batch_size * ctx.world_size
                                             * train.grad_accum))
    run["train"] = {**run["train"], "eval_every": per_epoch}
    return dataclasses.replace(train, eval_every=per_epoch)


def finetune(run: dict, output_dir: str | Path, resume: bool = False,
             truncate: bool = True) -> FinetuneResult:
    """Fine-tune from a run config dict (sections task, init, model, data, finetune, train);
    write ``output_dir/model`` (the best model on the eval set, else the last) and, when
    ``data.test`` is given, ``output_dir/test_metrics.json``."""
    from lanistr.tasks.runner import run_training, start

    output_dir = Path(output_dir)
    if run.get("task") == "seq2seq":  # its own data/finetune sections and model
        from lanistr.tasks.seq2seq import finetune_seq2seq

        return finetune_seq2seq(run, output_dir, resume=resume, truncate=truncate)
    run, kind, init, train, data, options, tokenizer = prepare_run(
        run, "a pretraining output's model/, a `lanistr convert-hf` output", ["seq2seq"])
    ctx = start(train, output_dir)
    torch.manual_seed(train.seed)
    setup = Setup(run, data, options, tokenizer, init, ctx, train.seed, train.batch_size,
                  truncate)
    model, task = TASKS[kind](setup)
    if options.freeze_embeddings or options.freeze_layers:
        n = freeze(model, options.freeze_embeddings, options.freeze_layers)
        if ctx.is_main:
            log.info("froze %.2fM parameters (embeddings%s)", n / 1e6,
                     f" + {options.freeze_layers} layers" if options.freeze_layers else "")
    train = eval_once_per_epoch(run, train, task, ctx)
    if ctx.is_main:
        log.info("%s: %d training examples, %d labels%s; model %s, %.2fM parameters", kind,
                 task.train_size(), len(model.config.labels),
                 f", {len(task.eval_data)} held-out (selecting on {task.best_metric})"
                 if task.eval_data is not None else "", type(model).__name__,
                 model.num_parameters() / 1e6)
    truncated = dict(getattr(task, "truncation", {}))
    result = run_training(model, task, train, output_dir, ctx, resume=resume, run_config=run)
    test_metrics = None
    if data.test and ctx.is_main:
        predictor = Predictor(result.model_dir, device=ctx.device)
        test_metrics = predictor.evaluate_file(data.test, progress=train.progress)
        write_json(output_dir / "test_metrics.json", test_metrics)
    return FinetuneResult(result.model_dir, result.steps, result.stop_reason, result.metrics,
                          test_metrics, truncated)


# --------------------------------------------------------------------------- inference


class Predictor:
    """A fine-tuned model directory, ready to classify texts or tag words (CPU by default)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", *,
                 windows: bool = False, stride: int | None = None):
        """``windows=True``: a text longer than the model's ``max_len`` is classified from all
        its ``max_len`` windows, ``stride`` tokens apart (default: half a window), by the mean
        of their logits, instead of from its first ``max_len`` tokens only."""
        from lanistr.nn import load_model

        self.model_dir = Path(model_dir)
        self.model = load_model(self.model_dir).to(device).eval()
        self.device = torch.device(device)
        self.tokenizer = Tokenizer.from_pretrained(self.model_dir)
        self.labels = list(self.model.config.labels)
        arch = self.model.config.architecture
        kinds = {"LanistrForSequenceClassification": "classify",
                 "LanistrForDocumentClassification": "classify",
                 "LanistrForTokenClassification": "tag"}
        if arch not in kinds or not self.labels:
            raise LanistrError(f"{self.model_dir}: not a fine-tuned classifier or tagger "
                               f"(architecture {arch}, {len(self.labels)} labels); fine-tune "
                               "it with `lanistr finetune` first")
        self.kind = kinds[arch]
        meta_path = self.model_dir / META_FILE
        self.meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        self.max_len = int(self.meta.get("max_len") or min(self.model.config.max_len, 512))
        self.windows = windows
        self.stride = max(1, (self.max_len - 2) // 2) if stride is None else stride
        if windows and (self.kind != "classify" or self.model.config.long == "hierarchical"):
            raise LanistrError(f"{self.model_dir}: windows are for classifiers of single texts "
                               "up to max_len (taggers split long sentences themselves; a "
                               "hierarchical model reads whole documents already)")
        if not 1 <= self.stride <= self.max_len - 2:
            raise LanistrError(f"stride must be between 1 and max_len - 2 = {self.max_len - 2} "
                               f"tokens, got {self.stride}")

    # -- classification --------------------------------------------------------------------

    @torch.no_grad()
    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 batch_size: int = 32, progress: bool = False) -> tuple[np.ndarray, int]:
        """Class probabilities ``(N, K)`` (rows in input order) and the number of texts that
        were cut to ``max_len``."""
        if self.windows:
            if pairs is not None:
                raise LanistrError("windows classify single texts; this model reads text pairs")
            return self._classify_windows(texts, batch_size, progress), 0
        if self.model.config.long == "hierarchical":
            ids, truncated = encode_segmented(self.tokenizer, texts, self.model.config.hierarchical)
            types = None
        else:
            ids, types, truncated = encode_texts(self.tokenizer, texts, pairs, self.max_len)
        probs = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for idx in _batches(order, batch_size, progress, "predict"):
            batch = pad_batch([ids[i] for i in idx], self.tokenizer.pad_id,
                              None if types is None else [types[i] for i in idx])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"],
                                batch["token_type_ids"]).logits.float()
            probs[idx] = torch.softmax(logits, -1).double().cpu().numpy()
        return probs, truncated

    def _classify_windows(self, texts: Sequence[str], batch_size: int,
                          progress: bool) -> np.ndarray:
        windows, owner = [], []
        for i, (segs, _) in enumerate(document_segments(self.tokenizer, texts, self.max_len,
                                                        self.stride)):
            windows += [np.asarray(seg, dtype=np.int32) for seg in segs]
            owner += [i] * len(segs)
        owner_t = torch.tensor(owner, dtype=torch.long)
        sums = torch.zeros(len(texts), len(self.labels), dtype=torch.float64)
        order = np.argsort([len(x) for x in windows], kind="stable")
        for idx in _batches(order, batch_size, progress, "predict (windows)"):
            batch = pad_batch([windows[i] for i in idx], self.tokenizer.pad_id, None)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"]).logits
            sums.index_add_(0, owner_t[torch.as_tensor(idx)], logits.double().cpu())
        counts = torch.bincount(owner_t, minlength=len(texts)).clamp(min=1)
        return torch.softmax(sums / counts[:, None], -1).numpy()

    # -- tagging ---------------------------------------------------------------------------

    @torch.no_grad()
    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = 32,
            progress: bool = False) -> tuple[list[list[str]], int]:
        """A tag for every word, and the number of sentences longer than ``max_len`` (those are
        tagged in consecutive chunks of words that fit). A word the tokenizer turns into no
        token at all (e.g. only control characters) gets ``O`` if that tag exists, else the
        first label."""
        fallback = "O" if "O" in self.labels else self.labels[0]
        tags = [[fallback] * len(s) for s in sentences]
        pending = [(i, 0) for i, s in enumerate(sentences) if len(s)]
        long_sentences: set[int] = set()
        bar = _progress(len(pending), progress, "predict")
        while pending:
            pending.sort(key=lambda p: len(sentences[p[0]]) - p[1])
            next_round = []
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                batch = self.tokenizer.encode_words(
                    [sentences[i][offset:] for i, offset in chunk], max_length=self.max_len,
                    padding=True, truncation=True)
                inputs = {k: v.to(self.device) for k, v in batch.model_inputs().items()}
                pred = self.model(inputs["input_ids"], inputs["attention_mask"],
                                  inputs["token_type_ids"]).logits.argmax(-1).cpu().tolist()
                for row, (i, offset) in enumerate(chunk):
                    seen = -1
                    previous = None
                    for t, w in enumerate(batch.word_ids[row]):
                        if w is not None and w != previous:
                            tags[i][offset + w] = self.labels[pred[row][t]]
                            seen = max(seen, w)
                        previous = w
                    rest = offset + seen + 1
                    if seen >= 0 and rest < len(sentences[i]) and self._cut(batch, row):
                        long_sentences.add(i)
                        next_round.append((i, rest))
                    elif bar is not None:
                        bar.update(1)
            pending = next_round
        if bar is not None:
            bar.close()
        return tags, len(long_sentences)

    def _cut(self, batch, row: int) -> bool:
        return int(batch.attention_mask[row].sum()) >= self.max_len

    # -- evaluation ------------------------------------------------------------------------

    def evaluate_file(self, path: str | Path, *, text_field: str | None = None,
                      text_pair_field: str | None = None, label_field: str | None = None,
                      batch_size: int = 32, progress: bool = False) -> dict:
        """Metrics of the model on a labelled file (fields default to those it was trained
        with): classification -> accuracy, macro-F1, per-class P/R/F1, confusion matrix;
        tagging -> token accuracy, per-tag scores, and entity F1 per type for BIO tags."""
        from lanistr.metrics import classification_scores, tagging_scores

        if self.kind == "tag":
            from lanistr.data.readers import read_conll

            sentences = read_conll(_resolve(path))
            for s in sentences:  # unknown tags are an error, as in training
                label_ids(s.tags, self.labels, path, [s.line + k for k in range(len(s))])
            pred, long = self.tag([s.words for s in sentences], batch_size, progress)
            out = tagging_scores([s.tags for s in sentences], pred, self.labels)
            out["long_sentences"] = long
        else:
            text_field = text_field or self.meta.get("text_field", "text")
            pair_field = text_pair_field or self.meta.get("text_pair_field")
            label_field = label_field or self.meta.get("label_field", "label")
            texts, pairs, labels, lines = read_labelled_texts(path, text_field, label_field,
                                                              pair_field)
            y = label_ids(labels, self.labels, path, lines)
            probs, truncated = self.classify(texts, pairs, batch_size, progress)
            out = classification_scores(y, probs.argmax(1), self.labels)
            p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
            out["loss"] = float(-np.log(p_true).mean())
            out["truncated"] = truncated
            if self.windows:
                out["windows"] = {"max_len": self.max_len, "stride": self.stride}
        out = {"task": self.kind, "data": str(path), "model": str(self.model_dir), **out}
        return out


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", dynamic_ncols=True)


def _batches(order: np.ndarray, batch_size: int, progress: bool, desc: str):
    bar = _progress(len(order), progress, desc)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield idx
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
