"""Fine-tuning an encoder for sequence classification (``classify``) or token tagging (``tag``)
on the shared training loop. Reading data: :mod:`lanistr.tasks.labelled`; losses and
metrics: :mod:`lanistr.tasks.objectives`; inference: :mod:`lanistr.tasks.predict`.

A run config has the sections ``task``, ``init``, ``model``, ``data``, ``finetune`` and
``train`` (see ``lanistr finetune --help`` and ``examples/finetune_*.yaml``). The data is
read and tokenised once, up front (a batch only pads pre-computed ids to its longest
example). The label set is the sorted set of training labels; it is stored in the
checkpoint's ``config.json`` (``labels``), and ``finetune.json`` beside it records the task
and the data fields so ``lanistr evaluate`` / ``predict`` read files the same way.

New task kinds register a builder in :data:`TASKS` (``task: NAME`` in the config).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanistr import precision
from lanistr.checkpoint import load_with_new_head
from lanistr.config import LanistrConfig, from_dict
from lanistr.data.tokenizer import Tokenizer
from lanistr.distributed import DistContext
from lanistr.errors import ConfigError, DataError
from lanistr.io import write_json
from lanistr.tasks import frozen_cache, head_probe, recipe
from lanistr.tasks.labelled import (
    Encoded,
    concat_encoded,
    encode_segmented,
    encode_tagged,
    encode_texts,
    label_ids,
    read_labelled_texts,
    report_truncation,
    resolve_path,
)
from lanistr.tasks.objectives import ClassificationTask, TaggingTask
from lanistr.tasks.param_groups import freeze
from lanistr.tasks.predict import Predictor
from lanistr.tasks.run_config import (
    FinetuneDataConfig,
    FinetuneOptions,
    FinetuneRun,
    Seq2SeqRun,
    parse_run,
)
from lanistr.tasks.runner import FinetuneResult, eval_once_per_epoch
from lanistr.tasks.task import Task

log = logging.getLogger("lanistr")


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
        model = load_with_new_head(cls, init, labels, model_section)
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
    """What a task builder gets: the run's typed config, its tokenizer and context."""

    run: FinetuneRun
    tokenizer: Tokenizer
    ctx: DistContext
    truncate: bool = True

    @property
    def data(self) -> FinetuneDataConfig:
        return self.run.data

    @property
    def options(self) -> FinetuneOptions:
        return self.run.finetune

    @property
    def seed(self) -> int:
        return self.run.train.seed


def _split_eval(train: Encoded, fraction: float, seed: int) -> tuple[Encoded, Encoded]:
    perm = np.random.default_rng([seed, 7]).permutation(len(train))
    n_eval = max(1, int(round(fraction * len(train))))
    if n_eval >= len(train):
        raise ConfigError(f"data.eval_fraction leaves no training examples ({len(train)} in all)")
    held, kept = sorted(perm[:n_eval].tolist()), sorted(perm[n_eval:].tolist())
    return train.subset(kept), train.subset(held)


def _meta(kind: str, data: FinetuneDataConfig) -> dict:
    return {"task": kind, "text_field": data.text_field, "text_pair_field": data.text_pair_field,
            "label_field": data.label_field, "max_len": data.max_len,
            "truncation": data.truncation}


def _held_out(s: Setup, train: Encoded, encode_file, limit, report: dict):
    """(train, held-out | None): data.eval, else data.eval_fraction of the training data."""
    d = s.data
    if d.eval:
        ev = encode_file(d.eval)
        report_truncation(ev, limit, report)
        return train, ev
    if d.eval_fraction:
        return _split_eval(train, d.eval_fraction, s.seed)
    return train, None


def build_classification(s: Setup):
    from lanistr.config import HierarchicalConfig
    from lanistr.nn import LanistrForDocumentClassification, LanistrForSequenceClassification

    d = s.data
    model_section = s.run.model
    hierarchical = model_section.get("long") == "hierarchical"
    if hierarchical:
        if d.text_pair_field:
            raise ConfigError("model.long=hierarchical classifies single documents; "
                              "remove data.text_pair_field")
        h = from_dict(HierarchicalConfig, model_section.get("hierarchical") or {},
                      "model.hierarchical")
    files = d.train_files
    read = {f: read_labelled_texts(f, d.text_field, d.label_field, d.text_pair_field)
            for f in files}
    label_set = sorted({label for _, _, labels, _ in read.values() for label in labels})
    if len(label_set) < 2:
        raise DataError(files[0], None, f"needs at least two distinct labels in field "
                        f"{d.label_field!r}, found {label_set}")
    train_name = " + ".join(files)

    def encode(path, texts, pairs, labels, lines) -> Encoded:
        y = label_ids(labels, label_set, path, lines, train_name)
        if hierarchical:
            ids, cut = encode_segmented(s.tokenizer, texts, h)
            return Encoded(str(path), lines, ids, None, y, cut)
        ids, types, cut = encode_texts(s.tokenizer, texts, pairs, d.max_len,
                                       truncate=s.truncate, path=path, lines=lines,
                                       truncation=d.truncation)
        return Encoded(str(path), lines, ids, types, y, cut)

    def encode_file(path) -> Encoded:
        texts, pairs, labels, lines = read.get(path) or read_labelled_texts(
            path, d.text_field, d.label_field, d.text_pair_field)
        return encode(path, texts, pairs, labels, lines)

    report: dict = {}
    limit = f"hierarchical.max_segments={h.max_segments}" if hierarchical else d.max_len
    parts = [encode_file(f) for f in files]
    for part in parts:
        report_truncation(part, limit, report)
    train, ev = _held_out(s, concat_encoded(parts), encode_file, limit, report)
    cls = LanistrForDocumentClassification if hierarchical else LanistrForSequenceClassification
    model = build_model(cls, s.run.init, model_section, s.tokenizer, label_set,
                        h.segment_len if hierarchical else d.max_len)
    task = ClassificationTask(train, ev, label_set, s.tokenizer, s.options,
                              _meta("classify", d), s.run.train.batch_size)
    task.truncation = report
    return model, task


def build_tagging(s: Setup):
    from lanistr.data.readers import read_conll
    from lanistr.nn import LanistrForTokenClassification

    d = s.data
    files = d.train_files
    read = {f: read_conll(resolve_path(f)) for f in files}
    label_set = sorted({t for sents in read.values() for sent in sents for t in sent.tags})
    train_name = " + ".join(files)

    def encode_file(path) -> Encoded:
        sents = read.get(path) or read_conll(resolve_path(path))
        ids, targets, cut = encode_tagged(s.tokenizer, sents, label_set, d.max_len,
                                          truncate=s.truncate, path=path, train_path=train_name)
        return Encoded(str(path), [x.line for x in sents], ids, None, targets, cut)

    report: dict = {}
    parts = [encode_file(f) for f in files]
    for part in parts:
        report_truncation(part, d.max_len, report)
    train, ev = _held_out(s, concat_encoded(parts), encode_file, d.max_len, report)
    model = build_model(LanistrForTokenClassification, s.run.init, s.run.model,
                        s.tokenizer, label_set, d.max_len)
    task = TaggingTask(train, ev, label_set, s.tokenizer, s.options, _meta("tag", d),
                       s.run.train.batch_size)
    task.truncation = report
    return model, task


#: task name (the config's ``task``) -> builder of ``(model, Task)``
TASKS: dict[str, Callable[[Setup], tuple[nn.Module, Task]]] = {
    "classify": build_classification,
    "tag": build_tagging,
}


# --------------------------------------------------------------------------- the run


def run_tokenizer(run: FinetuneRun) -> Tokenizer:
    """The tokenizer of a fine-tuning run: ``data.tokenizer``, else the one of ``init``."""
    return Tokenizer.from_pretrained(resolve_path(run.data.tokenizer or run.init))


def finetune(run: FinetuneRun | Seq2SeqRun | dict, output_dir: str | Path, resume: bool = False,
             truncate: bool = True) -> FinetuneResult:
    """Fine-tune from a run config (a :class:`FinetuneRun`, or a dict with the sections task,
    init, model, data, finetune, train); write ``output_dir/model`` (the best model on the eval
    set, else the last) and, when ``data.test`` is given, ``output_dir/test_metrics.json``."""
    from lanistr.tasks.runner import run_training, start

    if isinstance(run, dict):  # the default recipe fills in what the dict does not say
        run = parse_run("finetune", recipe.apply(run))
    output_dir = Path(output_dir)
    if isinstance(run, Seq2SeqRun):  # its own data/finetune sections and model
        from lanistr.tasks.seq2seq import finetune_seq2seq

        return finetune_seq2seq(run, output_dir, resume=resume, truncate=truncate)
    tokenizer = run_tokenizer(run)
    train = run.train
    ctx = start(train, output_dir)
    torch.manual_seed(train.seed)
    model, task = TASKS[run.task](Setup(run, tokenizer, ctx, truncate))
    options = run.finetune
    compute = precision.resolve(train.precision, ctx.device)[0]  # what the steps will run in
    if options.freeze_embeddings or options.freeze_layers:
        n = freeze(model, options.freeze_embeddings, options.freeze_layers)
        if ctx.is_main:
            log.info("froze %.2fM parameters (embeddings%s)", n / 1e6,
                     f" + {options.freeze_layers} layers" if options.freeze_layers else "")
        frozen_cache.maybe_attach(task, model, options.freeze_layers, options.cache_frozen, ctx,
                                  compute)
    if options.head_init == "probe" and not resume:  # a resumed run has its head already
        head_probe.warm_up_head(model, task, compute)
    run = eval_once_per_epoch(run, task, ctx)
    if ctx.is_main:
        log.info("%s: %d training examples, %d labels%s; model %s, %.2fM parameters", run.task,
                 task.train_size(), len(model.config.labels),
                 f", {len(task.eval_data)} held-out (selecting on {task.best_metric})"
                 if task.eval_data is not None else "", type(model).__name__,
                 model.num_parameters() / 1e6)
    truncated = dict(getattr(task, "truncation", {}))
    result = run_training(model, task, run.train, output_dir, ctx, resume=resume,
                          run_config=run.to_dict())
    test_metrics = None
    if run.data.test and ctx.is_main:
        predictor = Predictor(result.model_dir, device=ctx.device)
        test_metrics = predictor.evaluate_file(run.data.test, progress=run.train.progress)
        write_json(output_dir / "test_metrics.json", test_metrics)
    return FinetuneResult(result.model_dir, result.steps, result.stop_reason, result.metrics,
                          test_metrics, truncated)
