"""Sequence-to-sequence fine-tuning (``task: seq2seq``) and generation with the result.

Examples are JSONL/CSV/TSV records ``{"source": ..., "target": ...}``. The source is encoded as
``[CLS] source [SEP]``; the decoder reads ``[CLS] target`` and predicts ``target [SEP]``
(teacher forcing; the loss is a sum over target tokens divided by the global target-token
count). Targets are written as ``markup`` by default (:mod:`lanistr.data.markup`: lower-cased
units plus ``[CAP]``/``[UPPER]``/``[JOIN]``/``[SPACE]`` markers, so an uncased vocabulary
can produce cased, exactly spaced text) or ``plain`` (the tokenizer's ids, decoded with
``Tokenizer.decode``).

A run config has the sections of ``lanistr finetune``: ``task: seq2seq``, ``init`` (an encoder
checkpoint: a pretraining output's ``model/``, a ``lanistr convert-hf`` output, a seq2seq
model to continue, or ``scratch`` with ``model`` + ``data.tokenizer``), ``model`` (config
overrides, e.g. ``decoder_layers: 2``), ``data`` (:class:`Seq2SeqDataConfig`), ``finetune``
(:class:`Seq2SeqOptions`) and ``train``. Evaluation during training generates (greedy by
default) for up to ``finetune.eval_max_examples`` held-out examples and reports exact match,
token F1 and corpus BLEU (:mod:`lanistr.text_metrics`) besides the teacher-forced loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lanistr.checkpoint import read_generation_config, save_generation_config
from lanistr.config import LanistrConfig
from lanistr.data.tokenizer import Tokenizer
from lanistr.errors import ConfigError, DataError, LanistrError
from lanistr.tasks.labelled import length_batches
from lanistr.tasks.run_config import (
    META_FILE,
    Seq2SeqDataConfig,
    Seq2SeqOptions,
    Seq2SeqRun,
    parse_run,
    read_meta,
)
from lanistr.tasks.runner import FinetuneResult, eval_once_per_epoch, run_training
from lanistr.tasks.runner import start as start_run
from lanistr.tasks.task import Task

log = logging.getLogger("lanistr")

IGNORE = -100
_CHUNK = 1024  # examples encoded per tokenizer call


# --------------------------------------------------------------------------- configuration


# --------------------------------------------------------------------------- text <-> ids


class TextCodec:
    """Targets as ids and back: ``markup`` (cased, exactly spaced) or ``plain``."""

    def __init__(self, tokenizer: Tokenizer, target_format: str):
        self.tokenizer = tokenizer
        self.format = target_format
        if target_format == "markup":
            from lanistr.data.markup import Markup

            self.markup = Markup(tokenizer)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self.format == "markup":
            return self.markup.encode(texts)
        encodings = self.tokenizer.backend.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        if self.format == "markup":
            return self.markup.decode(ids)
        return self.tokenizer.decode(list(ids))

    def reference(self, text: str) -> str:
        """What a perfect output looks like: the text, whitespace-normalised."""
        return " ".join(text.split())


def prepare_tokenizer(tokenizer: Tokenizer, target_format: str) -> Tokenizer:
    """Add the markup marker tokens when the targets use them (in place)."""
    if target_format == "markup":
        from lanistr.data.markup import add_markers

        add_markers(tokenizer)
    return tokenizer


def encode_sources(tokenizer: Tokenizer, texts: Sequence[str], max_len: int):
    """``[CLS] text [SEP]`` ids (int32) of each text, cut to ``max_len``; and how many were cut."""
    out, cut = [], 0
    for start in range(0, len(texts), _CHUNK):
        for e in tokenizer.backend.encode_batch(list(texts[start:start + _CHUNK]),
                                                add_special_tokens=False):
            ids = e.ids
            if len(ids) > max_len - 2:
                ids, cut = ids[:max_len - 2], cut + 1
            out.append(np.asarray([tokenizer.cls_id, *ids, tokenizer.sep_id], dtype=np.int32))
    return out, cut


def encode_targets(codec: TextCodec, texts: Sequence[str], max_len: int):
    """Target ids (int32, no specials) cut to ``max_len - 1`` (room for [SEP]); and the count."""
    out, cut = [], 0
    for start in range(0, len(texts), _CHUNK):
        for ids in codec.encode(texts[start:start + _CHUNK]):
            if len(ids) > max_len - 1:
                ids, cut = ids[:max_len - 1], cut + 1
            out.append(np.asarray(ids, dtype=np.int32))
    return out, cut


def read_pairs(path: str | Path, source_field: str, target_field: str | None):
    """Sources, targets (or None) and line numbers of a JSONL/CSV/TSV file."""
    from lanistr.data.readers import read_records

    fields = [source_field] + ([target_field] if target_field else [])
    records = read_records(Path(path).expanduser(), fields)
    for r in records:
        for name in fields:
            if not isinstance(r[name], str):
                raise DataError(path, r.line, f"field {name!r} must be text, found "
                                f"{type(r[name]).__name__}")
    sources = [r[source_field] for r in records]
    targets = [r[target_field] for r in records] if target_field else None
    return sources, targets, [r.line for r in records]


@dataclass
class PairData:
    """Pre-encoded examples of one file."""

    path: str
    sources: list[np.ndarray]
    targets: list[np.ndarray]
    references: list[str]  # the normalised target texts
    source_truncated: int = 0
    target_truncated: int = 0

    def __len__(self) -> int:
        return len(self.sources)


def load_pairs(path, codec: TextCodec, data: Seq2SeqDataConfig, limit: int = 0) -> PairData:
    sources, targets, _ = read_pairs(path, data.source_field, data.target_field)
    if limit:
        sources, targets = sources[:limit], targets[:limit]
    src, src_cut = encode_sources(codec.tokenizer, sources, data.max_source_len)
    tgt, tgt_cut = encode_targets(codec, targets, data.max_target_len)
    out = PairData(str(path), src, tgt, [codec.reference(t) for t in targets], src_cut, tgt_cut)
    for what, n, limit_ in (("sources", src_cut, data.max_source_len),
                            ("targets", tgt_cut, data.max_target_len)):
        if n:
            log.warning("%s: %d of %d %s truncated to %d tokens", path, n, len(out), what, limit_)
    return out


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
    return out


def make_batch(data: PairData, indices: Sequence[int], tokenizer: Tokenizer) -> dict:
    """input_ids/attention_mask (B, S); decoder_input_ids = [CLS] target and labels =
    target [SEP] (B, T), labels -100 at padding."""
    src = [data.sources[i] for i in indices]
    input_ids = pad(src, tokenizer.pad_id)
    tgt = [data.targets[i].tolist() for i in indices]
    decoder_input_ids = pad([[tokenizer.cls_id, *t] for t in tgt], tokenizer.pad_id)
    labels = pad([[*t, tokenizer.sep_id] for t in tgt], IGNORE)
    return {"input_ids": input_ids, "attention_mask": (input_ids != tokenizer.pad_id).long(),
            "decoder_input_ids": decoder_input_ids, "labels": labels}


# --------------------------------------------------------------------------- the task


class Seq2SeqTask(Task):
    def __init__(self, train: PairData, eval: PairData | None, codec: TextCodec,
                 options: Seq2SeqOptions, generation, meta: dict, eval_batch_size: int = 32):
        self.train_data = train
        self.eval_data = eval
        self.codec = codec
        self.tokenizer = codec.tokenizer
        self.options = options
        self.generation = generation
        self.meta = meta
        self.eval_batch_size = eval_batch_size
        self.patience = options.patience
        if eval is None:
            self.best_metric = None
        else:
            self.best_metric = options.metric or ("bleu" if options.eval_generate else "loss")
        self.greater_is_better = self.best_metric != "loss"

    def train_size(self) -> int:
        return len(self.train_data)

    def collate(self, indices, epoch):
        return make_batch(self.train_data, indices, self.tokenizer)

    def counts(self, batch):
        return {"nll": float((batch["labels"] != IGNORE).sum())}

    def num_tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE).sum())

    def _logits(self, model, batch):
        labels = batch["labels"]
        positions = labels != IGNORE
        out = model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"],
                    logit_positions=positions)
        return out.logits.float(), labels[positions]

    def loss_sums(self, model, batch):
        logits, targets = self._logits(model, batch)
        return {"nll": F.cross_entropy(logits, targets, reduction="sum",
                                       label_smoothing=self.options.label_smoothing)}

    def eval_batches(self, rank, world_size):
        if self.eval_data is None:
            return
        for idx in length_batches(self.eval_data.sources, self.eval_batch_size,
                                  limit=self.options.eval_max_examples, rank=rank,
                                  world_size=world_size):
            batch = make_batch(self.eval_data, idx, self.tokenizer)
            batch["references"] = [self.eval_data.references[j] for j in idx]
            yield batch

    def eval_sums(self, model, batch):
        from lanistr.text_metrics import generation_stats

        model = getattr(model, "module", model)
        logits, targets = self._logits(model, batch)
        sums = {"nll_sum": F.cross_entropy(logits, targets, reduction="sum"),
                "correct": (logits.argmax(-1) == targets).sum().double(),
                "tokens": torch.tensor(float(targets.numel()))}
        if self.options.eval_generate:
            texts = generate_texts(model, self.codec, batch["input_ids"],
                                   batch["attention_mask"], self.generation)
            stats = generation_stats(texts, batch["references"])
            sums.update({f"gen_{k}": torch.tensor(v, dtype=torch.float64)
                         for k, v in stats.items()})
        return sums

    def finalize_metrics(self, sums):
        from lanistr.text_metrics import finalize_generation

        n = max(float(sums["tokens"]), 1.0)
        loss = float(sums["nll_sum"]) / n
        out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
               "token_accuracy": float(sums["correct"]) / n}
        if "gen_count" in sums:
            out.update(finalize_generation({k[4:]: float(v) for k, v in sums.items()
                                            if k.startswith("gen_")}))
        return out

    def save_extra(self, directory: Path) -> None:
        from lanistr.io import write_json

        self.tokenizer.save_pretrained(directory)
        save_generation_config(self.generation, directory)
        write_json(Path(directory) / META_FILE, self.meta)


@torch.no_grad()
def generate_texts(model, codec: TextCodec, input_ids, attention_mask, generation) -> list[str]:
    from lanistr.nn.decoder import decode_until_eos

    out = model.generate(input_ids, attention_mask, generation)
    return [codec.decode(ids) for ids in decode_until_eos(out.sequences, generation.eos_token_id)]


# --------------------------------------------------------------------------- building a run


def build_model(init: str, model_section: dict, tokenizer: Tokenizer, data: Seq2SeqDataConfig,
                copy: bool = False):
    """A seq2seq model: continued from a seq2seq checkpoint, built on an encoder checkpoint
    (new decoder), or from scratch (``model`` section, default preset mini). ``copy`` picks
    :class:`LanistrForSeq2SeqCopy` for a new model."""
    from lanistr.checkpoint import read_config
    from lanistr.nn import load_model
    from lanistr.nn.decoder import LanistrForSeq2Seq, LanistrForSeq2SeqCopy

    cls = LanistrForSeq2SeqCopy if copy else LanistrForSeq2Seq
    section = dict(model_section or {})
    base = read_config(init, **section) if init != "scratch" else None
    if init == "scratch":
        section = {"preset": "mini", **section}
        section.setdefault("vocab_size", tokenizer.vocab_size)
        section.setdefault("pad_token_id", tokenizer.pad_id)
        config = LanistrConfig.from_any(section)
        config.architecture = cls.__name__
        model = cls(config)
    elif is_seq2seq_architecture(base.architecture):
        model = load_model(init, **section)
    else:
        layers = section.pop("decoder_layers", None)
        vocab = max(tokenizer.vocab_size, base.vocab_size)
        model = cls.from_encoder(init, decoder_layers=layers, vocab_size=vocab, **section)
    config = model.config
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model vocab_size={config.vocab_size} is smaller than the "
                          f"tokenizer's vocabulary ({tokenizer.vocab_size})")
    if data.max_source_len > config.max_len:
        raise ConfigError(f"data.max_source_len={data.max_source_len} exceeds the model's "
                          f"max_len={config.max_len}")
    if data.max_target_len > config.max_len:
        raise ConfigError(f"data.max_target_len={data.max_target_len} exceeds the model's "
                          f"max_len={config.max_len}")
    return model


def finetune_seq2seq(run: Seq2SeqRun | dict, output_dir: str | Path, resume: bool = False,
                     truncate: bool = True) -> FinetuneResult:
    """Train a seq2seq model from a run config dict (see the module docstring); write
    ``output_dir/model`` (best on the eval set by ``finetune.metric``, else the last) and,
    with ``data.test``, ``output_dir/test_metrics.json``. ``truncate=False`` makes an
    over-long example an error."""
    from lanistr.io import write_json
    from lanistr.nn.decoder import GenerationConfig

    if isinstance(run, dict):
        run = parse_run("finetune", {"task": "seq2seq", **run})
    output_dir = Path(output_dir)
    init, train, data, options = run.init, run.train, run.data, run.finetune
    source = data.tokenizer or init
    tokenizer = prepare_tokenizer(Tokenizer.from_pretrained(Path(source).expanduser()),
                                  data.target_format)
    codec = TextCodec(tokenizer, data.target_format)

    ctx = start_run(train, output_dir)
    torch.manual_seed(train.seed)
    train_data = load_pairs(data.train, codec, data, data.max_train_examples)
    eval_data = load_pairs(data.eval, codec, data) if data.eval else None
    for part in (train_data, eval_data):
        if part is not None and not truncate and (part.source_truncated or part.target_truncated):
            raise DataError(part.path, None, f"{part.source_truncated} sources and "
                            f"{part.target_truncated} targets are longer than "
                            "data.max_source_len/max_target_len")
    model = build_model(init, run.model, tokenizer, data, options.copy)
    if options.freeze_encoder:
        for p in model.model.parameters():
            p.requires_grad_(False)
    generation = GenerationConfig.for_tokenizer(
        tokenizer, max_new_tokens=options.max_new_tokens or data.max_target_len,
        num_beams=options.num_beams, length_penalty=options.length_penalty,
        max_source_len=data.max_source_len, target_format=data.target_format)
    meta = {"task": "seq2seq", "source_field": data.source_field,
            "target_field": data.target_field, "max_source_len": data.max_source_len,
            "max_target_len": data.max_target_len, "target_format": data.target_format}
    task = Seq2SeqTask(train_data, eval_data, codec, options, generation, meta,
                       train.batch_size)
    run = eval_once_per_epoch(run, task, ctx)
    train = run.train
    if ctx.is_main:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("seq2seq: %d training pairs%s; %s with %d decoder layers, %.2fM parameters "
                 "(%.2fM trained)", len(train_data),
                 f", {len(eval_data)} held-out (selecting on {task.best_metric})"
                 if eval_data is not None else "", type(model).__name__,
                 len(model.decoder.layers), model.num_parameters() / 1e6, trainable / 1e6)
    truncated = {train_data.path: (max(train_data.source_truncated, train_data.target_truncated),
                                   len(train_data))}
    result = run_training(model, task, train, output_dir, ctx, resume=resume,
                          run_config=run.to_dict())
    test_metrics = None
    if data.test and ctx.is_main:
        predictor = Seq2SeqPredictor(result.model_dir)
        test_metrics = predictor.evaluate_file(data.test, progress=train.progress)
        write_json(output_dir / "test_metrics.json", test_metrics)
    return FinetuneResult(result.model_dir, result.steps, result.stop_reason, result.metrics,
                            test_metrics, truncated)


# --------------------------------------------------------------------------- inference


def is_seq2seq_architecture(name: str) -> bool:
    from lanistr.nn.decoder import LanistrForSeq2Seq
    from lanistr.nn.models import ARCHITECTURES

    return name in ARCHITECTURES and issubclass(ARCHITECTURES[name], LanistrForSeq2Seq)


def is_seq2seq_model(model_dir: str | Path) -> bool:
    from lanistr.checkpoint import read_config

    return is_seq2seq_architecture(read_config(model_dir).architecture)


class Seq2SeqPredictor:
    """A seq2seq model directory, ready to generate (CPU by default)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", *,
                 overrides: dict | None = None):
        from lanistr.nn import load_model

        self.model_dir = Path(model_dir)
        if not is_seq2seq_model(self.model_dir):
            raise LanistrError(f"{self.model_dir}: not a seq2seq model; train one with "
                               "`lanistr finetune` (task: seq2seq)")
        self.device = torch.device(device)
        self.model = load_model(self.model_dir, **(overrides or {})).to(self.device).eval()
        self.tokenizer = Tokenizer.from_pretrained(self.model_dir)
        self.generation = read_generation_config(self.model_dir)
        self.codec = TextCodec(self.tokenizer, self.generation.target_format)
        self.meta = read_meta(self.model_dir)

    def generate(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False,
                 **generation) -> list[str]:
        """Output text of each source (in input order). ``generation`` overrides the saved
        settings: ``num_beams``, ``max_new_tokens``, ``length_penalty``, ``use_cache``."""
        gen = self.generation.replace(**generation)
        ids, _ = encode_sources(self.tokenizer, texts, gen.max_source_len)
        outputs: list[str] = [""] * len(ids)
        for idx in length_batches(ids, batch_size, progress=progress, desc="generate"):
            input_ids = pad([ids[i] for i in idx], self.tokenizer.pad_id).to(self.device)
            mask = (input_ids != self.tokenizer.pad_id).long()
            for i, text in zip(idx, generate_texts(self.model, self.codec, input_ids, mask, gen)):
                outputs[i] = text
        return outputs

    def evaluate_file(self, path: str | Path, *, source_field: str | None = None,
                      target_field: str | None = None, batch_size: int = 32,
                      progress: bool = False, return_predictions: bool = False,
                      **generation) -> dict:
        """Exact match, token F1 and corpus BLEU of the model's outputs on a file of pairs."""
        from lanistr.text_metrics import generation_metrics

        source_field = source_field or self.meta.get("source_field", "source")
        target_field = target_field or self.meta.get("target_field", "target")
        sources, targets, _ = read_pairs(path, source_field, target_field)
        predictions = self.generate(sources, batch_size=batch_size, progress=progress,
                                    **generation)
        references = [self.codec.reference(t) for t in targets]
        gen = self.generation.replace(**generation)
        out = {"task": "seq2seq", "data": str(path), "model": str(self.model_dir),
               "examples": len(sources), "num_beams": gen.num_beams,
               **generation_metrics(predictions, references)}
        if return_predictions:
            out["predictions"] = predictions
        return out
