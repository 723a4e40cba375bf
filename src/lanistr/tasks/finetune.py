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

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lanistr.checkpoint import load_with_new_head
from lanistr.config import LanistrConfig, TrainConfig, from_dict
from lanistr.data.tokenizer import Tokenizer
from lanistr.distributed import DistContext
from lanistr.errors import ConfigError, DataError
from lanistr.io import write_json
from lanistr.tasks.labelled import (
    Encoded,
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
from lanistr.tasks.run_config import FinetuneDataConfig, FinetuneOptions
from lanistr.tasks.runner import FinetuneResult, default_train
from lanistr.tasks.trainer import Task

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
    report_truncation(train, limit, report)
    if d.eval:
        ev = _encode_file(encode, d.eval, d)
        report_truncation(ev, limit, report)
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
    sentences = read_conll(resolve_path(d.train))
    label_set = sorted({t for sent in sentences for t in sent.tags})

    def encode(path, sents) -> Encoded:
        ids, targets, cut = encode_tagged(s.tokenizer, sents, label_set, d.max_len,
                                          truncate=s.truncate, path=path, train_path=d.train)
        return Encoded(str(path), [x.line for x in sents], ids, None, targets, cut)

    report: dict = {}
    train = encode(d.train, sentences)
    report_truncation(train, d.max_len, report)
    if d.eval:
        ev = encode(d.eval, read_conll(resolve_path(d.eval)))
        report_truncation(ev, d.max_len, report)
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
        init = str(resolve_path(init))
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
    return run, kind, init, train, data, options, Tokenizer.from_pretrained(resolve_path(source))


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
