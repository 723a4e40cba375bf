"""Knowledge distillation on the one training loop: a student learns from a frozen teacher.

``general`` (task-agnostic, on unlabelled text packed into ``max_len`` sequences):

* attention relations (MiniLM, Wang et al. 2020): KL(teacher || student) between the
  last layer's self-attention distributions ``softmax(Q K^T / sqrt(d))``, per relation head
  and real query token;
* value relations: the same between ``softmax(V V^T / sqrt(d))``;
* hidden states (TinyBERT-style): MSE between the teacher's last hidden states and the
  student's through a learned projection (the identity when the sizes agree).

The queries, keys and values of both models are split into ``R`` relation heads (MiniLMv2):
with ``R`` = the models' own number of heads the attention relation *is* each head's attention
distribution; another ``R`` (dividing both hidden sizes) lets a student with other heads or
another hidden size learn from the teacher.

``task`` (from a fine-tuned teacher classifier, on its training set plus any unlabelled
text): KL between the teacher's and the student's class distributions at temperature ``T``,
times ``T^2`` (Hinton et al. 2015), optionally plus the gold labels' cross-entropy. The student
is saved as a classifier with the teacher's labels and tokenizer (``lanistr predict``).

Every loss is a sum over its units (relation rows, tokens, examples) that the loop divides by
the global count, so distillation runs under ``torchrun`` and resumes exactly like every task.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.data.tokenizer import Tokenizer
from lanistr.distributed import DistContext
from lanistr.errors import ConfigError, DataError
from lanistr.nn.models import LanistrForSequenceClassification, LanistrModel, PreTrainedModel
from lanistr.tasks.labelled import (
    IGNORE,
    encode_texts,
    label_ids,
    length_batches,
    pad_batch,
    read_labelled_texts,
)
from lanistr.tasks.run_config import META_FILE, DistillOptions, DistillRun, parse_run
from lanistr.tasks.task import Task

log = logging.getLogger("lanistr")

_MASKED = -1e9  # score of a padded key (exp() of it is exactly 0 in float32)


# --------------------------------------------------------------------------- what is matched


@dataclass
class Relations:
    """What one model shows the other, for one batch. ``q``, ``k``, ``v``: ``(B, H, T, Dh)``
    of the distilled layer (None when no relation loss is on); ``hidden``: last hidden states
    ``(B, T, D)`` (projected to the teacher's size for the student); ``logits``: ``(B, L)``."""

    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def encoder_model(model: nn.Module, where: str) -> LanistrModel:
    """The bare encoder of a lanistr model (head models keep it as ``.model``)."""
    if isinstance(model, LanistrModel):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, LanistrModel):
        return inner
    raise ConfigError(f"{where}: a {type(model).__name__} has no lanistr encoder to distil")


def relations(model: nn.Module, batch: dict, *, qkv: bool, top: bool) -> Relations:
    """The distilled layer's q/k/v (``qkv``) and the last hidden states and logits (``top``)
    of ``model``: the layers below the last run once, the last layer's projections are read
    from its input (:meth:`~lanistr.nn.encoder.Encoder.attention_inputs`)."""
    enc = encoder_model(model, "model")
    encoder = enc.encoder
    mask = batch["attention_mask"]
    last = len(encoder.layers) - 1
    x, layout = encoder.lower(batch["input_ids"], mask, batch.get("token_type_ids"), last)
    out = Relations()
    if qkv:
        out.q, out.k, out.v = encoder.attention_inputs(x, layout, last)
    if top:
        out.hidden = encoder.upper(x, layout, last)  # (B, T, D)
        if isinstance(model, LanistrForSequenceClassification):
            out.logits = model.classifier(enc.pool(out.hidden, mask))
    return out


class DistillStudent(PreTrainedModel):
    """What the loop trains: the student and, for the hidden-state loss, a projection to the
    teacher's hidden size. Checkpoints hold both (for an exact resume); the run's ``model/``
    holds the student alone."""

    base_prefix = ""
    head_prefixes = ()

    def __init__(self, student: PreTrainedModel, teacher_hidden: int, opts: DistillOptions):
        super().__init__(copy.deepcopy(student.config))
        self.student = student
        self.qkv = bool(opts.attention_weight or opts.value_weight)
        self.top = bool(opts.hidden_weight or opts.soft_weight or opts.hard_weight)
        self.projection = None
        if opts.hidden_weight:
            d = student.config.hidden_size
            self.projection = nn.Linear(d, teacher_hidden)
            with torch.no_grad():  # the identity where it can be: a copy of the teacher
                if d == teacher_hidden:  # has nothing to learn
                    self.projection.weight.copy_(torch.eye(d))
                    self.projection.bias.zero_()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Relations:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        out = relations(self.student, batch, qkv=self.qkv, top=self.top)
        if self.projection is not None:
            out.hidden = self.projection(out.hidden)
        return out


# --------------------------------------------------------------------------- losses


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, H, T, Dh) -> (B, R, T, D / R): the heads concatenated, split into R relation heads."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh).view(b, t, heads, -1).transpose(1, 2)


def relation_log_probs(a: torch.Tensor, b: torch.Tensor, heads: int,
                       key_padding: torch.Tensor) -> torch.Tensor:
    """log softmax(A B^T / sqrt(d_r)) over the real keys, per relation head: (B, R, T, T)."""
    a, b = _split(a.float(), heads), _split(b.float(), heads)
    scores = a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])  # (B, R, T, T)
    scores = scores.masked_fill(key_padding[:, None, None, :], _MASKED)
    return F.log_softmax(scores, dim=-1)


def relation_kl_sum(teacher: tuple, student: tuple, heads: int,
                    attention_mask: torch.Tensor) -> torch.Tensor:
    """Sum over relation heads and real query tokens of KL(teacher || student) between the
    relation distributions of ``(A, B)`` pairs (``(Q, K)`` or ``(V, V)``)."""
    real = attention_mask.bool()
    lt = relation_log_probs(*teacher, heads, ~real)
    ls = relation_log_probs(*student, heads, ~real)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # (B, R, T): padded keys have probability 0
    return (kl * real[:, None, :].to(kl.dtype)).sum()


def soft_target_sum(teacher_logits, student_logits, temperature: float) -> torch.Tensor:
    """Sum over examples of KL(softmax(t / T) || softmax(s / T)) x T^2 (Hinton et al.)."""
    lt = F.log_softmax(teacher_logits.float() / temperature, -1)
    ls = F.log_softmax(student_logits.float() / temperature, -1)
    return (lt.exp() * (lt - ls)).sum() * temperature ** 2


# --------------------------------------------------------------------------- the task


class DistillTask(Task):
    """Batches of token ids (padded); the teacher runs without gradients on each."""

    best_metric = None  # the last student is kept

    def __init__(self, teacher: nn.Module, opts: DistillOptions, heads: int,
                 tokenizer: Tokenizer, train, eval_set=None, *, labels: np.ndarray | None = None,
                 eval_labels: np.ndarray | None = None, eval_batch_size: int = 32,
                 meta: dict | None = None):
        self.teacher = teacher.eval().requires_grad_(False)
        self.opts, self.heads, self.tokenizer = opts, heads, tokenizer
        self.train, self.eval_set = train, eval_set  # sequences of int arrays (token ids)
        self.labels, self.eval_labels = labels, eval_labels  # task mode: ids, IGNORE unlabelled
        self.eval_batch_size = eval_batch_size
        self.meta = meta
        # task mode, the teacher's logits per example: see cache_teacher_logits
        self.train_logits: torch.Tensor | None = None
        self.eval_logits: torch.Tensor | None = None

    def train_size(self) -> int:
        return len(self.train)

    def _batch(self, seqs, indices, labels) -> dict:
        batch = pad_batch([np.asarray(seqs[i]) for i in indices], self.tokenizer.pad_id)
        if labels is not None:
            batch["labels"] = torch.as_tensor(labels[list(indices)], dtype=torch.long)
        return batch

    def collate(self, indices, epoch):
        batch = self._batch(self.train, indices, self.labels)
        if self.train_logits is not None:
            batch["teacher_logits"] = self.train_logits[list(indices)]
        return batch

    @property
    def logits_only(self) -> bool:
        """The student learns only from the teacher's logits (and the gold labels)."""
        o = self.opts
        return not (o.attention_weight or o.value_weight or o.hidden_weight) and bool(o.soft_weight)

    @torch.no_grad()
    def cache_teacher_logits(self, device: torch.device, batch_size: int = 32) -> None:
        """Run the teacher once over the training and held-out sets (eval mode, batches of
        similar length) and keep its logits: they are the same in every epoch and every
        evaluation, so the steps and evaluations then run only the student
        (``tests/test_distill.py`` checks the losses are the recomputed ones)."""

        def logits(seqs) -> torch.Tensor:
            out = torch.empty(len(seqs), len(self.teacher.config.labels))
            for pick in length_batches(seqs, batch_size):
                batch = {k: v.to(device) for k, v in self._batch(seqs, pick, None).items()}
                out[pick] = self.teacher_relations(batch).logits.float().cpu()
            return out

        self.train_logits = logits(self.train)
        self.eval_logits = None if self.eval_set is None else logits(self.eval_set)

    def counts(self, batch):
        o, tokens = self.opts, float(batch["attention_mask"].sum())
        out = {}
        if o.attention_weight:
            out["attention"] = tokens * self.heads
        if o.value_weight:
            out["value"] = tokens * self.heads
        if o.hidden_weight:
            out["hidden"] = tokens
        if o.soft_weight:
            out["soft"] = float(len(batch["input_ids"]))
        if o.hard_weight:
            out["hard"] = float((batch["labels"] != IGNORE).sum())
        return out

    @torch.no_grad()
    def teacher_relations(self, batch) -> Relations:
        device = batch["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        o = self.opts
        return relations(self.teacher, batch, qkv=bool(o.attention_weight or o.value_weight),
                         top=bool(o.hidden_weight or o.soft_weight))

    def _teacher(self, batch) -> Relations:
        """The teacher's cached logits where the batch carries them, else its forward."""
        if "teacher_logits" in batch:
            return Relations(logits=batch["teacher_logits"])
        return self.teacher_relations(batch)

    def loss_sums(self, model, batch):
        s = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return self.weighted_sums(self._teacher(batch), s, batch)

    def weighted_sums(self, t: Relations, s: Relations, batch) -> dict[str, torch.Tensor]:
        """Each loss term's weighted sum over its units, from the teacher's and the student's
        :class:`Relations` of ``batch``."""
        o, mask = self.opts, batch["attention_mask"]
        sums = {}
        if o.attention_weight:
            sums["attention"] = o.attention_weight * relation_kl_sum(
                (t.q, t.k), (s.q, s.k), self.heads, mask)
        if o.value_weight:
            sums["value"] = o.value_weight * relation_kl_sum(
                (t.v, t.v), (s.v, s.v), self.heads, mask)
        if o.hidden_weight:
            sq = ((s.hidden.float() - t.hidden.float()) ** 2).mean(-1)  # (B, T)
            sums["hidden"] = o.hidden_weight * (sq * mask.to(sq.dtype)).sum()
        if o.soft_weight:
            sums["soft"] = o.soft_weight * soft_target_sum(t.logits, s.logits, o.temperature)
        if o.hard_weight:
            sums["hard"] = o.hard_weight * F.cross_entropy(
                s.logits.float(), batch["labels"], ignore_index=IGNORE, reduction="sum")
        return sums

    # -- evaluation: the distillation losses (and, with labels, the student's accuracy)

    def eval_batches(self, rank, world_size):
        if self.eval_set is None:
            return
        mine = list(range(rank, len(self.eval_set), world_size))
        for i in range(0, len(mine), self.eval_batch_size):
            pick = mine[i:i + self.eval_batch_size]
            batch = self._batch(self.eval_set, pick, self.eval_labels)
            if self.eval_logits is not None:
                batch["teacher_logits"] = self.eval_logits[pick]
            yield batch

    def eval_sums(self, model, batch):
        t = self._teacher(batch)
        s = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out = {f"{k}_sum": v.detach().double() for k, v in self.weighted_sums(t, s, batch).items()}
        out.update({f"{k}_count": torch.tensor(v, dtype=torch.float64)
                    for k, v in self.counts(batch).items()})
        if "labels" in batch and t.logits is not None and s.logits is not None:
            pred = s.logits.argmax(-1)
            labelled = batch["labels"] != IGNORE
            out["correct"] = ((pred == batch["labels"]) & labelled).sum().double()
            out["agree"] = (pred == t.logits.argmax(-1)).sum().double()
            out["labelled"] = labelled.sum().double()
            out["examples"] = torch.tensor(float(len(pred)), dtype=torch.float64)
        return out

    def finalize_metrics(self, sums):
        out = {}
        for key in [k[:-4] for k in sums if k.endswith("_sum")]:
            out[f"distill_{key}"] = float(sums[f"{key}_sum"]) / max(float(sums[f"{key}_count"]), 1)
        if out:
            out["distill_loss"] = sum(out.values())
        if "labelled" in sums:
            out["accuracy"] = float(sums["correct"]) / max(float(sums["labelled"]), 1.0)
            out["teacher_agreement"] = float(sums["agree"]) / max(float(sums["examples"]), 1.0)
        return out

    def save_extra(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)
        if self.meta is not None:
            from lanistr.io import write_json

            write_json(Path(directory) / META_FILE, self.meta)


# --------------------------------------------------------------------------- building a run


def load_teacher(path: str, mode: str) -> nn.Module:
    from lanistr.nn import load_model

    teacher = load_model(path)
    if mode == "task" and not isinstance(teacher, LanistrForSequenceClassification):
        raise ConfigError(f"distill.teacher: {path} is a {type(teacher).__name__}; task "
                          "distillation needs a fine-tuned sequence classifier")
    encoder_model(teacher, f"distill.teacher {path}")
    return teacher


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return (a.vocab_size == b.vocab_size and a.lowercase == b.lowercase
            and a.vocab_tokens() == b.vocab_tokens())


def build_student(run: DistillRun, teacher: nn.Module, tokenizer: Tokenizer) -> PreTrainedModel:
    """The student: a bare encoder (general) or a classifier with the teacher's labels (task),
    new from a preset and fields or loaded from ``init`` (whose tokenizer must be the
    teacher's)."""
    from lanistr.checkpoint import load_with_new_head

    task = run.distill.mode == "task"
    labels = list(teacher.config.labels) if task else []
    if run.from_scratch:
        section = {"preset": "mini", **run.model}
        section.setdefault("vocab_size", tokenizer.vocab_size)
        section.setdefault("pad_token_id", tokenizer.pad_id)
        if task:
            section["labels"] = labels
            section.setdefault("pooling", teacher.config.pooling)
        config = LanistrConfig.from_any(section)
        if config.vocab_size < tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={config.vocab_size} is smaller than the "
                              f"teacher's vocabulary ({tokenizer.vocab_size})")
        return (LanistrForSequenceClassification if task else LanistrModel)(config)
    if (Path(run.init) / "tokenizer.json").is_file():
        mine = Tokenizer.from_pretrained(run.init)
        if not same_tokenizer(mine, tokenizer):
            raise ConfigError(
                f"init: the student {run.init} and the teacher {run.distill.teacher} have "
                f"different tokenizers (vocabularies of {mine.vocab_size} and "
                f"{tokenizer.vocab_size} tokens{'' if mine.vocab_size != tokenizer.vocab_size else ', not the same'}); "
                "distillation compares them token by token: start the student from scratch "
                "(it takes the teacher's tokenizer) or from a checkpoint with the same one")
    if task:
        return load_with_new_head(LanistrForSequenceClassification, run.init, labels, run.model)
    return LanistrModel.from_pretrained(run.init, **run.model)


def relation_heads(opts: DistillOptions, teacher: LanistrConfig, student: LanistrConfig) -> int:
    if not (opts.attention_weight or opts.value_weight):
        return 1
    heads = opts.relation_heads
    if not heads:
        if teacher.num_heads != student.num_heads:
            raise ConfigError(
                f"the teacher has {teacher.num_heads} attention heads and the student "
                f"{student.num_heads}: set distill.relation_heads to a number that divides both "
                f"hidden sizes ({teacher.hidden_size} and {student.hidden_size})")
        return teacher.num_heads
    for who, c in (("teacher", teacher), ("student", student)):
        if c.hidden_size % heads:
            raise ConfigError(f"distill.relation_heads={heads} does not divide the {who}'s "
                              f"hidden_size={c.hidden_size}")
    return heads


def _text_sequences(files, tokenizer, max_len, output_dir: Path, ctx: DistContext):
    """Unlabelled text as packed ``[CLS] ... [SEP]`` sequences of ``max_len`` tokens."""
    from lanistr.data.pretraining import PackedDataset, build_token_cache

    cache_dir = output_dir / "cache"
    if ctx.is_main:
        cache = build_token_cache(files, tokenizer, cache_dir)
    ctx.barrier()
    if not ctx.is_main:
        cache = build_token_cache(files, tokenizer, cache_dir)
    return TokenIds(PackedDataset(cache, max_len))


class TokenIds:
    """The ``input_ids`` of a packed dataset's sequences, read when a batch needs them."""

    def __init__(self, packed):
        self.packed = packed

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.packed[i]["input_ids"]


def _documents(files, tokenizer, max_len, truncation="head") -> list[np.ndarray]:
    """Each document of text files (cut to ``max_len``): unlabelled examples for task mode."""
    from lanistr.data.readers import read_documents

    ids = []
    for f in files:
        texts = [d.text for d in read_documents(f) if d.text.strip()]
        if not texts:
            raise DataError(f, None, "no text")
        ids += encode_texts(tokenizer, texts, None, max_len, path=f, truncation=truncation)[0]
    return ids


def _labelled(path, data, tokenizer, labels) -> tuple[list[np.ndarray], np.ndarray]:
    texts, _, names, lines = read_labelled_texts(path, data.text_field, data.label_field)
    if not texts:
        raise DataError(path, None, "no examples")
    y = label_ids(names, labels, path, lines)
    return encode_texts(tokenizer, texts, None, data.max_len, path=path, lines=lines,
                        truncation=data.truncation)[0], y


def build_distill_task(run: DistillRun, teacher, tokenizer, heads, output_dir, ctx):
    data, opts = run.data, run.distill
    batch = run.train.batch_size
    if opts.mode == "general":
        train = _text_sequences(data.train_files, tokenizer, data.max_len, output_dir, ctx)
        held = (_text_sequences([data.eval], tokenizer, data.max_len, output_dir, ctx)
                if data.eval else None)
        return DistillTask(teacher, opts, heads, tokenizer, train, held, eval_batch_size=batch)
    labels = list(teacher.config.labels)
    train, y = [], []
    for f in data.train_files:
        ids, part = _labelled(f, data, tokenizer, labels)
        train += ids
        y.append(part)
    extra = _documents(data.unlabelled_files, tokenizer, data.max_len, data.truncation)
    train += extra
    y.append(np.full(len(extra), IGNORE, dtype=np.int64))
    held, held_y = (_labelled(data.eval, data, tokenizer, labels) if data.eval else (None, None))
    meta = {"task": "classify", "text_field": data.text_field, "text_pair_field": None,
            "label_field": data.label_field, "max_len": data.max_len,
            "truncation": data.truncation, "distilled_from": str(opts.teacher)}
    if ctx.is_main:
        log.info("distillation data: %d labelled + %d unlabelled examples", len(train) -
                 len(extra), len(extra))
    return DistillTask(teacher, opts, heads, tokenizer, train, held, labels=np.concatenate(y),
                       eval_labels=held_y, eval_batch_size=batch, meta=meta)


def distill(run: DistillRun | dict, output_dir: str | Path, resume: bool = False):
    """Train a student from ``run.distill.teacher``; ``OUTPUT/model`` is the student (an
    encoder, or a classifier in task mode) with the teacher's tokenizer."""
    from lanistr.io import atomic_path
    from lanistr.tasks.runner import run_training, start

    if isinstance(run, dict):
        run = parse_run("distill", run)
    output_dir = Path(output_dir)
    ctx = start(run.train, output_dir)
    opts = run.distill
    tokenizer = Tokenizer.from_pretrained(opts.teacher)
    teacher = load_teacher(opts.teacher, opts.mode)
    torch.manual_seed(run.train.seed)
    student = build_student(run, teacher, tokenizer)
    heads = relation_heads(opts, teacher.config, student.config)
    model = DistillStudent(student, teacher.config.hidden_size, opts)
    task = build_distill_task(run, teacher, tokenizer, heads, output_dir, ctx)
    if task.logits_only and not ctx.enabled:  # under torchrun each rank runs its teacher
        t = time.perf_counter()
        task.cache_teacher_logits(ctx.device, run.train.batch_size)
        if ctx.is_main:
            log.info("teacher logits computed once for %d training and %d held-out examples "
                     "(%.0f s); the steps and evaluations run only the student", len(task.train),
                     len(task.eval_set or ()), time.perf_counter() - t)
    if ctx.is_main:
        log.info("distilling %s (%.2fM parameters) into %s (%.2fM), %s", opts.teacher,
                 sum(p.numel() for p in teacher.parameters()) / 1e6, type(student).__name__,
                 student.num_parameters() / 1e6, ", ".join(
                     f"{k}={getattr(opts, k)}" for k in ("attention_weight", "value_weight",
                                                         "hidden_weight", "soft_weight",
                                                         "hard_weight") if getattr(opts, k)))
    result = run_training(model, task, run.train, output_dir, ctx, resume=resume,
                          run_config=run.to_dict())
    if ctx.is_main:  # the student alone (the loop saved it with the projection)
        with atomic_path(result.model_dir) as tmp:
            student.save_pretrained(tmp)
            task.save_extra(tmp)
    return result
