"""Typed run configs: one frozen dataclass per training command (:class:`PretrainRun`,
:class:`FinetuneRun`, :class:`Seq2SeqRun`, :class:`DaptRun`, :class:`DannRun`,
:class:`DistillRun`) built from the typed dataclass of each of its sections.

A run config is parsed and validated once, where the command starts (:func:`parse_run`):
every section, the model overrides against their preset or the ``init`` checkpoint, and the
paths it names, before any tokenizer is trained or any data is read. It is never mutated
during the run (a value worked out later, such as ``train.eval_every`` from the data size, makes
a new object with :meth:`RunConfig.replace`) and is saved as ``run_config.yaml``, which
``--resume`` reads back (:func:`resolve_run_dict`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lanistr.config import TrainConfig, from_dict, to_dict
from lanistr.data.tokenizer import TRUNCATIONS
from lanistr.errors import ConfigError

META_FILE = "finetune.json"  # beside a fine-tuned model: its task and data fields


def read_meta(model_dir: str | os.PathLike) -> dict:
    """The ``finetune.json`` beside a fine-tuned model (how it reads texts), or {}."""
    import json

    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); fine-tune the model again") from None


def _check_truncation(value: str) -> None:
    if value not in TRUNCATIONS:
        raise ConfigError(f"data.truncation={value!r} must be one of {', '.join(TRUNCATIONS)}")


@dataclass
class FinetuneDataConfig:
    """Where the examples are and how to read them."""

    train: str | list[str] | None = None  # a file, or a list of files read one after another
    eval: str | None = None  # held-out set for model selection / early stopping
    test: str | None = None  # evaluated once, with the final model
    eval_fraction: float = 0.0  # without `eval`: hold out this part of `train` (seeded)
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    max_len: int = 128
    truncation: str = "head"  # a text over max_len keeps: head | head_tail (classification)
    tokenizer: str | None = None  # default: the tokenizer of `init`

    def __post_init__(self) -> None:
        if self.max_len < 4:
            raise ConfigError(f"data.max_len={self.max_len} must be >= 4")
        _check_truncation(self.truncation)
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")
        if isinstance(self.train, list) and len(self.train) == 1:
            self.train = self.train[0]

    @property
    def train_files(self) -> list[str]:
        return _as_list(self.train)


@dataclass
class FinetuneOptions:
    """The ``finetune`` section."""

    freeze_embeddings: bool = False
    freeze_layers: int = 0  # freeze the embeddings and the first N encoder layers
    layer_lr_decay: float = 1.0  # layer l (of L) trains at lr * decay ** (L + 1 - l)
    class_weights: Literal["none", "balanced"] = "none"
    patience: int = 0  # stop after this many evaluations without improvement (0 = never)
    metric: str | None = None  # model-selection metric; default per task
    # frozen layers run once per example, without dropout, and their output is cached
    # (lanistr.tasks.frozen_cache); later steps run only the layers above
    cache_frozen: bool = True
    # the new head's start: random, or a logistic regression fitted to the pretrained
    # features first (lanistr.tasks.head_probe; LP-FT)
    head_init: Literal["random", "probe"] = "random"
    # the default recipe (lanistr.tasks.recipe) fills in what the config does not say
    recipe: Literal["auto", "off"] = "auto"
    # what it chose and why (written by the recipe into run_config.yaml; ignored on input)
    chosen: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.freeze_layers < 0:
            raise ConfigError(f"finetune.freeze_layers={self.freeze_layers} must be >= 0")
        if not 0 < self.layer_lr_decay <= 1:
            raise ConfigError(f"finetune.layer_lr_decay={self.layer_lr_decay} must be in (0, 1]")
        if self.patience < 0:
            raise ConfigError(f"finetune.patience={self.patience} must be >= 0")


#: Fine-tuning defaults that differ from the loop's (used where the config does not say).
#: ``precision: auto``: bf16 autocast where the device computes bf16 natively (lanistr.precision;
#: on an AVX512-BF16 CPU a fine-tuning step 1.53x faster, benchmarks/results/precision.json, at
#: the same held-out and test accuracy, benchmarks/results/precision_quality.md)
#: ``train.group_by_length`` stays off: 1.43-1.89x faster training loops on 20 Newsgroups and
#: Reuters-R8, but held-out accuracy -1.1 and -1.4 points on 20 Newsgroups (2 seeds), -0.35 on
#: average over 4 datasets (benchmarks/results/length_grouping.md)
TRAIN_DEFAULTS = {"epochs": 3.0, "max_steps": 0, "batch_size": 16, "warmup_ratio": 0.1,
                  "precision": "auto"}
LR_PRETRAINED, LR_SCRATCH = 5e-5, 5e-4
SEQ2SEQ_TRAIN_DEFAULTS = {"epochs": 3.0, "max_steps": 0, "batch_size": 32, "warmup_ratio": 0.05}
SEQ2SEQ_LR_PRETRAINED, SEQ2SEQ_LR_SCRATCH = 3e-4, 5e-4
#: `lanistr pretrain` defaults where the config does not say: what learnt fastest per
#: wall-clock second on a 2-core CPU (benchmarks/results/pretrain_recipe.md, 6-minute runs):
#: batches of 16 (more updates per second: 16 beat 32 beat 64), lr 1e-3 with warm-up (2e-3
#: was worse), and, for the default model (no preset named), pre-norm blocks without dropout
#: (as in cramming). A named preset keeps its own layout (the `lanistr` design: post-norm).
PRETRAIN_TRAIN_DEFAULTS = {"lr": 1e-3, "warmup_ratio": 0.06, "batch_size": 16,
                           "precision": "auto"}
PRETRAIN_MODEL_DEFAULTS = {"norm": "pre", "dropout": 0.0, "attention_dropout": 0.0}
#: Continued-pretraining defaults where the config does not say (a pretrained start point
#: wants a smaller learning rate than pretraining from scratch).
DAPT_TRAIN_DEFAULTS = {"lr": 1e-4, "warmup_ratio": 0.06, "max_steps": 1000,
                       "precision": "auto"}


@dataclass
class PretrainDataConfig:
    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    tokenizer: str | None = None  # a tokenizer dir; None = train one on `train`
    vocab_size: int = 8000  # for a newly trained tokenizer
    lowercase: bool = True
    max_len: int = 128
    mlm_probability: float = 0.15
    whole_word_mask: bool = True
    nsp: bool = False
    cache_dir: str | None = None  # token cache; default OUTPUT/cache
    eval_max_examples: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.train, str):
            self.train = [self.train]
        if isinstance(self.eval, str):
            self.eval = [self.eval]
        self.train = [os.path.expanduser(f) for f in self.train]
        self.eval = [os.path.expanduser(f) for f in self.eval]
        if self.max_len < 8:
            raise ConfigError(f"data.max_len={self.max_len} must be >= 8")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"data.mlm_probability={self.mlm_probability} must be in (0, 1)")


@dataclass
class Seq2SeqDataConfig:
    """The ``data`` section of a seq2seq run."""

    train: str | None = None
    eval: str | None = None  # held-out set: evaluation during training, model selection
    test: str | None = None  # evaluated once with the final model (test_metrics.json)
    source_field: str = "source"
    target_field: str = "target"
    max_source_len: int = 128  # tokens, [CLS] and [SEP] included
    max_target_len: int = 128  # target tokens, [SEP] included
    target_format: Literal["markup", "plain"] = "markup"
    tokenizer: str | None = None  # default: the tokenizer of `init`
    max_train_examples: int = 0  # use only the first N training examples (0 = all)

    def __post_init__(self) -> None:
        if self.max_source_len < 3:
            raise ConfigError(f"data.max_source_len={self.max_source_len} must be >= 3")
        if self.max_target_len < 2:
            raise ConfigError(f"data.max_target_len={self.max_target_len} must be >= 2")
        if self.max_train_examples < 0:
            raise ConfigError(f"data.max_train_examples={self.max_train_examples} must be >= 0")


@dataclass
class Seq2SeqOptions:
    """The ``finetune`` section of a seq2seq run."""

    label_smoothing: float = 0.0
    copy: bool = False  # a new model gets a copy mechanism (LanistrForSeq2SeqCopy)
    freeze_encoder: bool = False  # train only the decoder and the output head
    patience: int = 0  # stop after this many evaluations without improvement (0 = never)
    metric: Literal["bleu", "exact_match", "token_f1", "loss"] | None = None  # default bleu
    eval_generate: bool = True  # generate during evaluation (else loss/accuracy only)
    eval_max_examples: int = 500
    num_beams: int = 1  # for evaluation, and the saved default of `lanistr generate`
    length_penalty: float = 1.0
    max_new_tokens: int | None = None  # default data.max_target_len

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"finetune.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.patience < 0:
            raise ConfigError(f"finetune.patience={self.patience} must be >= 0")
        if self.eval_max_examples < 1:
            raise ConfigError(f"finetune.eval_max_examples={self.eval_max_examples} must be >= 1")
        if self.num_beams < 1:
            raise ConfigError(f"finetune.num_beams={self.num_beams} must be >= 1")
        if self.metric in ("bleu", "exact_match", "token_f1") and not self.eval_generate:
            raise ConfigError(f"finetune.metric={self.metric} needs finetune.eval_generate=true")


@dataclass
class DaptOptions:
    """The ``adapt`` section of ``lanistr adapt dapt``."""

    extend_vocab: int = 0  # add the N most frequent domain words missing from the vocabulary
    min_word_count: int = 2  # ... that occur at least this often
    # gradual unfreezing: the MLM head alone first (a converted encoder's head is new and
    # random), then one more encoder layer from the top every N steps (0 = all from step 0)
    unfreeze_every: int = 0

    def __post_init__(self) -> None:
        if self.extend_vocab < 0:
            raise ConfigError(f"adapt.extend_vocab={self.extend_vocab} must be >= 0")
        if self.unfreeze_every < 0:
            raise ConfigError(f"adapt.unfreeze_every={self.unfreeze_every} must be >= 0")
        if self.min_word_count < 1:
            raise ConfigError(f"adapt.min_word_count={self.min_word_count} must be >= 1")


@dataclass
class DannOptions:
    """The ``dann`` section of ``lanistr adapt dann``."""

    target: str | None = None  # unlabelled target-domain training data (labels are ignored)
    target_max_examples: int = 0  # use at most this many target examples (0 = all)
    domain_weight: float = 1.0  # weight of the domain loss (0 = source-only fine-tuning)
    max_lambda: float = 1.0  # final gradient-reversal weight
    gamma: float = 10.0  # steepness of the reversal-weight schedule
    domain_lr_scale: float = 10.0  # the (new, randomly initialised) domain head trains at lr x this
    unfreeze_every: int = 0  # gradual unfreezing: one more layer every N steps (0 = off)

    def __post_init__(self) -> None:
        if self.domain_weight < 0:
            raise ConfigError(f"dann.domain_weight={self.domain_weight} must be >= 0")
        if self.max_lambda < 0:
            raise ConfigError(f"dann.max_lambda={self.max_lambda} must be >= 0")
        if self.gamma <= 0:
            raise ConfigError(f"dann.gamma={self.gamma} must be > 0")
        if self.domain_lr_scale <= 0:
            raise ConfigError(f"dann.domain_lr_scale={self.domain_lr_scale} must be > 0")
        if self.unfreeze_every < 0 or self.target_max_examples < 0:
            raise ConfigError("dann.unfreeze_every and dann.target_max_examples must be >= 0")


@dataclass
class DistillDataConfig:
    """The ``data`` section of ``lanistr distill``. The tokenizer is the teacher's."""

    # general: text files (.txt blocks, .jsonl text fields) packed into max_len sequences;
    # task: labelled examples (JSONL/CSV/TSV with text_field and label_field)
    train: str | list[str] | None = None
    unlabelled: str | list[str] | None = None  # task: more text, taught by soft targets only
    eval: str | None = None  # held-out: text (general) or labelled examples (task)
    text_field: str = "text"
    label_field: str = "label"
    max_len: int = 128
    truncation: str = "head"  # task: a text over max_len keeps head | head_tail (as finetune)

    def __post_init__(self) -> None:
        if self.max_len < 4:
            raise ConfigError(f"data.max_len={self.max_len} must be >= 4")
        _check_truncation(self.truncation)
        if isinstance(self.train, list) and len(self.train) == 1:
            self.train = self.train[0]

    @property
    def train_files(self) -> list[str]:
        return _as_list(self.train)

    @property
    def unlabelled_files(self) -> list[str]:
        return _as_list(self.unlabelled)


#: Loss weights of each distillation mode where the config does not give them.
DISTILL_WEIGHTS = {"general": {"attention_weight": 1.0, "value_weight": 1.0,
                               "hidden_weight": 0.0, "soft_weight": 0.0},
                   "task": {"attention_weight": 0.0, "value_weight": 0.0,
                            "hidden_weight": 0.0, "soft_weight": 1.0}}


@dataclass
class DistillOptions:
    """The ``distill`` section: the teacher and what the student learns from it.

    ``general`` (task-agnostic, unlabelled text): the KL divergence between the teacher's and
    the student's last-layer self-attention distributions, per (relation) head, and between
    their value-value scaled dot-product distributions (MiniLM, Wang et al. 2020), and/or the
    MSE between the teacher's last hidden states and the student's through a learned
    projection (TinyBERT-style). ``task``: a fine-tuned teacher classifier's soft targets at
    ``temperature`` (KL x T^2, Hinton et al. 2015), optionally with the gold labels'
    cross-entropy (``hard_weight``); the student is saved as a classifier with the teacher's
    labels and tokenizer."""

    teacher: str | None = None  # a lanistr or converted model directory
    mode: Literal["general", "task"] = "general"
    attention_weight: float | None = None  # default: 1 (general), 0 (task)
    value_weight: float | None = None  # default: 1 (general), 0 (task)
    hidden_weight: float | None = None  # default: 0
    soft_weight: float | None = None  # default: 1 (task); task mode only
    hard_weight: float = 0.0  # task mode only
    temperature: float = 2.0
    # heads the attention/value relations are split into (0: the models' number of heads,
    # which must then be the same); must divide both hidden sizes (MiniLMv2's relation heads)
    relation_heads: int = 0

    def __post_init__(self) -> None:
        for key, value in DISTILL_WEIGHTS[self.mode].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        weights = ("attention_weight", "value_weight", "hidden_weight", "soft_weight",
                   "hard_weight")
        for key in weights:
            if getattr(self, key) < 0:
                raise ConfigError(f"distill.{key}={getattr(self, key)} must be >= 0")
        if self.mode == "general" and (self.soft_weight or self.hard_weight):
            raise ConfigError("distill.soft_weight and distill.hard_weight need labels: set "
                              "distill.mode=task (a fine-tuned classifier teacher)")
        if not any(getattr(self, key) for key in weights):
            raise ConfigError("distill: every loss weight is 0; nothing to learn")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature={self.temperature} must be > 0")
        if self.relation_heads < 0:
            raise ConfigError(f"distill.relation_heads={self.relation_heads} must be >= 0")


# --------------------------------------------------------------------------- whole runs


def _derived(default):
    """A field worked out from the run (not a config section): left out of run_config.yaml."""
    return field(default=default, metadata={"derived": True})


@dataclass(frozen=True)
class RunConfig:
    """Fields shared by every run: where the weights start and the loop's settings. ``model``
    holds overrides of the model config (a preset and fields from scratch; fields such as
    pooling or dropout over a checkpoint's config)."""

    init: str
    model: dict
    train: TrainConfig

    #: the top-level keys a config file of this run may have
    SECTIONS: typing.ClassVar[tuple[str, ...]] = ()

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The resolved config, as written to ``run_config.yaml``."""
        return {f.name: (to_dict(v) if dataclasses.is_dataclass(v) else v)
                for f in dataclasses.fields(self) if not f.metadata.get("derived")
                for v in [getattr(self, f.name)]}

    @property
    def from_scratch(self) -> bool:
        return self.init == "scratch"


@dataclass(frozen=True)
class PretrainRun(RunConfig):
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    SECTIONS = ("init", "model", "data", "train")


@dataclass(frozen=True)
class FinetuneRun(RunConfig):
    task: str = "classify"
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    eval_every_epoch: bool = _derived(False)  # train.eval_every not given: once per epoch
    SECTIONS = ("task", "init", "model", "data", "finetune", "train")


@dataclass(frozen=True)
class Seq2SeqRun(RunConfig):
    task: str = "seq2seq"
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    finetune: Seq2SeqOptions = field(default_factory=Seq2SeqOptions)
    eval_every_epoch: bool = _derived(False)  # train.eval_every not given: once per epoch
    SECTIONS = ("task", "init", "model", "data", "finetune", "train")


@dataclass(frozen=True)
class DaptRun(RunConfig):
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    adapt: DaptOptions = field(default_factory=DaptOptions)
    SECTIONS = ("init", "model", "data", "adapt", "train")


@dataclass(frozen=True)
class DannRun(FinetuneRun):
    dann: DannOptions = field(default_factory=DannOptions)
    SECTIONS = ("task", "init", "model", "data", "finetune", "dann", "train")


@dataclass(frozen=True)
class DistillRun(RunConfig):
    """``lanistr distill``: ``init``/``model`` are the student (``scratch`` with a preset and
    fields, default ``mini``, or a checkpoint); ``distill.teacher`` the teacher."""

    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    distill: DistillOptions = field(default_factory=DistillOptions)
    SECTIONS = ("init", "model", "data", "distill", "train")


FINETUNE_TASKS = ("classify", "tag")


def run_class(command: str, raw: dict) -> type[RunConfig]:
    """The run config class of a command (``finetune`` picks by ``task``)."""
    if command == "finetune":
        task = raw.get("task", "classify")
        if task == "seq2seq":
            return Seq2SeqRun
        if task not in FINETUNE_TASKS:
            raise ConfigError(f"task={task!r} is not a fine-tuning task (choose from "
                              f"{', '.join([*FINETUNE_TASKS, 'seq2seq'])})")
        return FinetuneRun
    classes = {"pretrain": PretrainRun, "dapt": DaptRun, "dann": DannRun,
               "distill": DistillRun}
    if command not in classes:
        raise ConfigError(f"no run config for command {command!r}")
    return classes[command]


def train_defaults(cls: type[RunConfig], init: str) -> dict:
    """The loop settings a run of this kind uses where its ``train`` section is silent."""
    pretrained = init != "scratch"
    if cls is Seq2SeqRun:
        return {**SEQ2SEQ_TRAIN_DEFAULTS,
                "lr": SEQ2SEQ_LR_PRETRAINED if pretrained else SEQ2SEQ_LR_SCRATCH}
    if issubclass(cls, FinetuneRun):
        out = {**TRAIN_DEFAULTS, "lr": LR_PRETRAINED if pretrained else LR_SCRATCH}
        if cls is DannRun:  # adversarial training not measured in bf16: fp32 unless asked
            out.pop("precision")
        return out
    if cls is DaptRun:
        return dict(DAPT_TRAIN_DEFAULTS)
    if cls is PretrainRun:
        return dict(PRETRAIN_TRAIN_DEFAULTS)
    return {}


def parse_run(command: str, raw: dict) -> RunConfig:
    """Parse and validate a whole run config (a dict from YAML + ``--set``) for ``command``
    (pretrain | finetune | dapt | dann): every error a config can have is raised here, as one
    :class:`~lanistr.errors.ConfigError` naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a run config is a mapping of sections, got {type(raw).__name__}")
    cls = run_class(command, raw)
    raw = _expand_paths(raw)
    unknown = sorted(set(raw) - set(cls.SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (valid: {', '.join(cls.SECTIONS)})")
    init = _init(cls, raw.get("init", "scratch" if cls in (PretrainRun, DistillRun) else None))
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping of config fields, got {model!r}")
    hints = typing.get_type_hints(cls)
    if cls is PretrainRun and init == "scratch" and "preset" not in model:
        model = {**PRETRAIN_MODEL_DEFAULTS, **model}  # the default model's pretraining layout
    values: dict[str, Any] = {"init": init, "model": dict(model)}
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        if f.metadata.get("derived"):
            values[f.name] = "eval_every" not in (raw.get("train") or {})
            continue
        section = raw.get(f.name)
        if f.name == "task":
            values["task"] = section or f.default
        elif f.name == "train":
            given = section or {}
            if not isinstance(given, dict):
                raise ConfigError(f"train: expected a mapping, got {given!r}")
            defaults = train_defaults(cls, init)
            if given.get("epochs") and "max_steps" not in given:  # epochs given: they decide
                defaults["max_steps"] = 0  # (not a default step cap the user never set)
            if (cls is PretrainRun and given.get("max_minutes") and "max_steps" not in given
                    and "warmup_steps" not in given):  # a time budget alone: it drives the
                defaults.update(max_steps=0, schedule_by="time")  # schedule (cramming)
            values["train"] = from_dict(TrainConfig, {**defaults, **given}, "train")
        else:
            if section is not None and not isinstance(section, dict):
                raise ConfigError(f"{f.name}: expected a mapping, got {section!r}")
            values[f.name] = from_dict(hints[f.name], section or {}, f.name)
    run = cls(**values)
    # a fine-tuning recipe may pick max_len from the data: check it here only when it is given
    given_len = isinstance(run, (PretrainRun, DaptRun)) or bool(
        {"max_len", "max_source_len"} & set(raw.get("data") or {}))
    _check_run(run, check_max_len=given_len)
    return run


def _init(cls: type[RunConfig], init) -> str:
    if cls in (PretrainRun, DistillRun) and init in (None, "scratch"):
        return "scratch"
    examples = {DaptRun: "the checkpoint to adapt: a pretraining output's model/ or a "
                         "`lanistr convert-hf` output",
                DannRun: "e.g. a `lanistr adapt dapt` output's model/"}.get(
        cls, "a pretraining output's model/, a `lanistr convert-hf` output")
    if not isinstance(init, str) or not init:
        raise ConfigError(f"init: give a checkpoint directory ({examples}) or `scratch` (with a "
                          "model section and data.tokenizer)")
    if init == "scratch":
        if cls is DaptRun:
            raise ConfigError(f"init: give {examples}; adapting starts from a checkpoint")
        return init
    path = Path(init).expanduser()
    if not (path / "config.json").is_file():
        what = "no such directory" if not path.exists() else "not a lanistr checkpoint (no config.json)"
        raise ConfigError(f"init: {init}: {what}; give {examples}, or `scratch`")
    return str(path)


def _check_run(run: RunConfig, check_max_len: bool = True) -> None:
    """Cross-section checks, the model overrides and the named paths."""
    from lanistr.config import LanistrConfig

    if run.from_scratch:
        section = {"preset": "mini", **run.model}
        section.setdefault("vocab_size", 30522)  # the tokenizer's size is known later
        model = LanistrConfig.from_any(section)
    else:
        from lanistr.checkpoint import read_config
        from lanistr.errors import CheckpointError

        if "preset" in run.model:
            raise ConfigError(f"model.preset={run.model['preset']!r} only applies with init: "
                              "scratch; with a checkpoint, `model` overrides fields such as "
                              "pooling, dropout or use_pooler")
        try:
            model = read_config(run.init, **run.model)
        except CheckpointError as exc:  # names config.json; say that the override is wrong
            raise ConfigError(f"model: {exc}") from None
    data = run.data
    max_len = getattr(data, "max_len", None) or getattr(data, "max_source_len", None)
    if check_max_len and max_len and model.long != "hierarchical" and max_len > model.max_len:
        key = "data.max_len" if hasattr(data, "max_len") else "data.max_source_len"
        raise ConfigError(f"{key}={max_len} exceeds the model's max_len={model.max_len}")
    if isinstance(run, DistillRun):
        _check_distill(run, model)
        return
    if isinstance(run, (PretrainRun, DaptRun)):
        if not data.train:
            raise ConfigError("data.train: no text files given (a file or a list of files)")
        for key in ("train", "eval"):
            for path in getattr(data, key):
                _exists(f"data.{key}", path)
        if isinstance(run, DaptRun) and run.adapt.extend_vocab and data.tokenizer:
            raise ConfigError("data.tokenizer cannot be combined with adapt.extend_vocab (the "
                              "extended tokenizer is written beside the extended model)")
    else:
        role = "source-domain " if isinstance(run, DannRun) else ""
        if not data.train:
            raise ConfigError(f"data.train: no labelled {role}training file given")
        for key in ("train", "eval", "test"):
            for path in _as_list(getattr(data, key)):
                _exists(f"data.{key}", path)
        eval_fraction = getattr(data, "eval_fraction", 0.0)
        if run.finetune.patience and not (data.eval or eval_fraction):
            raise ConfigError("finetune.patience needs held-out data: set data.eval"
                              + ("" if isinstance(run, Seq2SeqRun) else " or data.eval_fraction"))
        if isinstance(run, DannRun):
            if not run.dann.target:
                raise ConfigError("dann.target: no unlabelled target-domain training file given")
            _exists("dann.target", run.dann.target)
    tokenizer = getattr(data, "tokenizer", None)
    if tokenizer:
        _exists("data.tokenizer", tokenizer)
    elif run.from_scratch and not isinstance(run, PretrainRun):
        raise ConfigError("init: scratch needs data.tokenizer (a tokenizer directory; train one "
                          "with `lanistr tokenizer train`)")


def _check_distill(run: DistillRun, student) -> None:
    """The teacher, the data files, and the student/teacher pair."""
    from lanistr.checkpoint import read_config
    from lanistr.errors import CheckpointError

    opts, data = run.distill, run.data
    if not opts.teacher:
        raise ConfigError("distill.teacher: give the teacher's model directory (a lanistr "
                          "checkpoint or a `lanistr convert-hf` output)")
    try:
        teacher = read_config(opts.teacher)
    except CheckpointError as exc:
        raise ConfigError(f"distill.teacher: {exc}") from None
    if not (Path(opts.teacher) / "tokenizer.json").is_file():
        raise ConfigError(f"distill.teacher: {opts.teacher} has no tokenizer.json; the student "
                          "reads the teacher's tokens")
    if opts.mode == "task" and not (teacher.labels and teacher.architecture ==
                                    "LanistrForSequenceClassification"):
        raise ConfigError(f"distill.teacher: {opts.teacher} is not a fine-tuned classifier "
                          f"(architecture {teacher.architecture}, {len(teacher.labels)} "
                          "labels); task distillation needs one (`lanistr finetune`), or use "
                          "distill.mode=general")
    if not data.train:
        raise ConfigError("data.train: no training file given (text for distill.mode=general, "
                          "labelled examples for distill.mode=task)")
    if data.unlabelled and opts.mode != "task":
        raise ConfigError("data.unlabelled is for distill.mode=task (general distillation "
                          "reads unlabelled text as data.train)")
    for key in ("train", "unlabelled", "eval"):
        for path in _as_list(getattr(data, key)):
            _exists(f"data.{key}", path)
    if data.max_len > min(student.max_len, teacher.max_len):
        which = "student" if student.max_len < teacher.max_len else "teacher"
        raise ConfigError(f"data.max_len={data.max_len} exceeds the {which}'s max_len="
                          f"{min(student.max_len, teacher.max_len)}")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _exists(key: str, path: str) -> None:
    if not Path(path).expanduser().exists():
        raise ConfigError(f"{key}: {path}: no such file or directory")


def data_path(path: str) -> str:
    """A path of a run config with ``$LANISTR_DATA_DIR`` (where ``lanistr data fetch`` puts
    datasets; its default when unset), other variables and ``~`` expanded."""
    from lanistr.data.fetch import data_root

    for form in ("${LANISTR_DATA_DIR}", "$LANISTR_DATA_DIR"):
        path = path.replace(form, str(data_root()))
    return os.path.expanduser(os.path.expandvars(path))


def _expand_paths(raw: dict) -> dict:
    """``raw`` with the path settings (init, data.*, dann.target) expanded by :func:`data_path`."""
    def expand(value):
        if isinstance(value, str):
            return data_path(value)
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    out = dict(raw)
    if isinstance(out.get("init"), str) and out["init"] != "scratch":
        out["init"] = data_path(out["init"])
    for section, keys in (("data", ("train", "eval", "test", "tokenizer", "cache_dir",
                                    "unlabelled")),
                          ("dann", ("target",)), ("distill", ("teacher",))):
        if isinstance(out.get(section), dict):
            out[section] = {k: expand(v) if k in keys else v for k, v in out[section].items()}
    return out


# --------------------------------------------------------------------------- the command boundary

#: Settings a resumed run may change: they do not alter what is computed.
RESUME_MAY_CHANGE = frozenset({
    "train.progress", "train.log_every", "train.save_every", "train.keep_last",
    "train.num_threads", "train.device", "train.dist_backend", "train.overwrite_output",
    "train.eval_batches",
})
RUN_CONFIG_FILE = "run_config.yaml"


def load_run(command: str, config_path: str | None, sets: list[str] | None,
             output_dir: str | os.PathLike, resume: bool = False) -> RunConfig:
    """The typed run config of a training command: ``--config`` file + ``--set`` overrides.
    With ``--resume`` it is the run's own ``OUTPUT/run_config.yaml`` (so nothing else needs to
    be given); settings given again must agree with it, and the ones that differ are named
    (only those in :data:`RESUME_MAY_CHANGE` may change)."""
    from lanistr.config import apply_overrides, load_config_file

    given = load_config_file(config_path) if config_path else {}
    if not isinstance(given, dict):
        raise ConfigError(f"{config_path}: a run config is a mapping of sections")
    apply_overrides(given, sets)
    saved_path = Path(output_dir) / RUN_CONFIG_FILE
    if not (resume and saved_path.is_file()):
        if command == "finetune":  # the default recipe fills in what the config does not say
            from lanistr.tasks import recipe

            given = recipe.apply(given)
        return parse_run(command, given)
    saved = parse_run(command, load_config_file(saved_path))
    merged = parse_run(command, _merge(saved.to_dict(), given))
    before, after = _flat(saved.to_dict()), _flat(merged.to_dict())
    differ = sorted(k for k in set(before) | set(after)
                    if before.get(k) != after.get(k) and k not in RESUME_MAY_CHANGE)
    if differ:
        shown = ", ".join(f"{k} ({before.get(k)!r} -> {after.get(k)!r})" for k in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ConfigError(f"--resume: {shown}{more} differ from the run's {saved_path}; a "
                          "resumed run continues exactly as it was planned (start a new run "
                          "in another --output to change them)")
    return merged


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "model":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
