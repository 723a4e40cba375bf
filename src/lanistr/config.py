"""Typed, validated configuration: the model (:class:`LanistrConfig`) and the shared training
loop (:class:`TrainConfig`), with named presets and a JSON/YAML round trip.

Every config is a dataclass validated in ``__post_init__``; an error names the field and the
values involved. Unknown keys are an error, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lanistr.errors import ConfigError

# --------------------------------------------------------------------------------------------
# generic dict <-> dataclass with field-path error messages


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from JSON/YAML) to type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        _check(value in args, f"{where}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if origin is list and inner is str and isinstance(value, str):
            value = [value]  # one file where a list of files may stand (--set data.train=F)
        _check(isinstance(value, (list, tuple)), f"{where}: expected a list, got {value!r}")
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _check(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if tp is bool:
        _check(isinstance(value, bool), f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        _check(isinstance(value, int) and not isinstance(value, bool),
               f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool),
               f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types are errors."""
    data = {} if data is None else data
    prefix = f"{where}." if where else ""
    _check(isinstance(data, dict), f"{where or cls.__name__}: expected a mapping, got {data!r}")
    custom = getattr(cls, "from_dict", None)
    if custom is not None and getattr(custom, "__self__", None) is cls:
        return custom(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"unknown key{'s' if len(unknown) > 1 else ''} "
           f"{', '.join(prefix + k for k in unknown)} (valid: {', '.join(sorted(names)) or 'none'})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    custom = getattr(obj, "to_dict", None)
    if custom is not None:
        return custom()
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = _plain(value)
    return out


def _plain(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# YAML / overrides


def _yaml_loader():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 floats, so ``3e-4`` is a number, not a string."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."),
    )
    return Loader


def parse_yaml(text: str, source: str = "<string>") -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{line}: invalid YAML: {reason}") from None


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a dict, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    data = parse_yaml(text, str(path)) if path.suffix != ".json" else _json(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _json(text: str, path: Path):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
        value = parse_yaml(raw, f"--set {key}") if raw != "" else ""
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------------------
# attention


#: attention backend name -> its typed config dataclass. Config owns the parameters of every
#: backend (pure data, no torch), so a config validates without importing the model; the
#: backends in ``lanistr.nn.attention`` register their modules under the same names.
BACKEND_CONFIGS: dict[str, type] = {}


def register_backend_config(name: str):
    """Class decorator: ``@register_backend_config("sliding_window")`` on a backend's config."""

    def deco(cls: type) -> type:
        BACKEND_CONFIGS[name] = cls
        return cls

    return deco


@register_backend_config("full")
@dataclass
class FullAttentionConfig:
    """Full attention has no parameters."""

@register_backend_config("linformer")
@dataclass
class LinformerConfig:
    """``k``: projected length; ``share_kv``: one projection for keys and values."""

    k: int = 128
    share_kv: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"attention.k={self.k!r} must be a positive integer")

@register_backend_config("lsh")
@dataclass
class LSHConfig:
    """``bucket_size``: chunk length (and tokens per bucket); ``n_hashes``: hashing rounds;
    ``seed``: rotation seed."""

    bucket_size: int = 64
    n_hashes: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bucket_size", "n_hashes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"attention.{name}={value!r} must be a positive integer")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"attention.seed={self.seed!r} must be an integer >= 0")

@register_backend_config("sliding_window")
@dataclass
class SlidingWindowConfig:
    """``window``: neighbours on each side; ``global_tokens``: positions that attend to all
    keys and that all queries attend to (``[]`` for none; positions >= T are ignored)."""

    window: int = 256
    global_tokens: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 0:
            raise ConfigError(f"attention.window={self.window!r} must be an integer >= 0")
        bad = [g for g in self.global_tokens if not isinstance(g, int) or g < 0]
        if bad:
            raise ConfigError(f"attention.global_tokens={list(self.global_tokens)!r}: positions "
                              f"must be integers >= 0 (got {bad[0]!r})")
        self.global_tokens = sorted(set(self.global_tokens))


@dataclass
class AttentionConfig:
    """Which attention backend to use and its parameters.

    The YAML form is flat: ``{backend: sliding_window, window: 256}``. The parameters are
    parsed once, into the backend's typed config (:data:`BACKEND_CONFIGS`), when the config is
    made: ``settings``.
    """

    backend: str = "full"
    options: dict = field(default_factory=dict)
    settings: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.settings = self.backend_config()

    @classmethod
    def from_dict(cls, data: dict, where: str = "attention") -> AttentionConfig:
        data = dict(data)
        backend = data.pop("backend", "full")
        _check(isinstance(backend, str), f"{where}.backend: expected a string, got {backend!r}")
        cfg = cls.__new__(cls)
        cfg.backend, cfg.options = backend, data
        cfg.settings = cfg.backend_config(where)  # errors name `where`
        return cfg

    def backend_config(self, where: str = "attention"):
        """Parse and validate ``options`` as the backend's typed config."""
        if self.backend not in BACKEND_CONFIGS:
            raise ConfigError(f"{where}.backend={self.backend!r} is not a registered backend "
                              f"(choose from {', '.join(sorted(BACKEND_CONFIGS))})")
        return from_dict(BACKEND_CONFIGS[self.backend], self.options, where)

    def to_dict(self) -> dict:
        return {"backend": self.backend, **_plain(self.options)}


# --------------------------------------------------------------------------------------------
# model


@dataclass
class HierarchicalConfig:
    """Long documents: overlapping segments -> encoder -> segment vectors -> a small
    document-level transformer -> classifier."""

    segment_len: int = 128  # tokens per segment, [CLS] and [SEP] included
    stride: int = 96  # tokens between segment starts (overlap = segment_len - 2 - stride)
    max_segments: int = 16
    doc_layers: int = 1

    def __post_init__(self) -> None:
        _check(self.segment_len >= 4, f"hierarchical.segment_len={self.segment_len} must be >= 4")
        _check(0 < self.stride <= self.segment_len - 2,
               f"hierarchical.stride={self.stride} must be in [1, segment_len - 2 = "
               f"{self.segment_len - 2}]")
        _check(self.max_segments >= 1, f"hierarchical.max_segments={self.max_segments} must be >= 1")
        _check(self.doc_layers >= 0, f"hierarchical.doc_layers={self.doc_layers} must be >= 0")


@dataclass
class LanistrConfig:
    """The encoder architecture (and which task head a checkpoint carries)."""

    vocab_size: int = 30522
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 1024
    activation: Literal["relu", "gelu"] = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_len: int = 512
    position: Literal["sinusoidal", "learned"] = "learned"
    norm: Literal["post", "pre"] = "post"
    type_vocab_size: int = 2
    embed_scale: bool = False
    embed_layer_norm: bool = True
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # seq2seq (LanistrForSeq2Seq): decoder layers, 0 = as many as the encoder
    decoder_layers: int = 0
    # heads
    use_pooler: bool = False
    pooling: Literal["first", "mean"] = "first"
    classifier_dropout: float | None = None
    labels: list[str] = field(default_factory=list)
    architecture: str = "LanistrModel"
    # long documents: "hierarchical" encodes overlapping segments, then the document
    long: Literal["none", "hierarchical"] = "none"
    hierarchical: HierarchicalConfig = field(default_factory=lambda: HierarchicalConfig())

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_dim", "max_len"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name}={value!r} must be a positive integer")
        _check(self.decoder_layers >= 0, f"decoder_layers={self.decoder_layers} must be >= 0")
        _check(self.hidden_size % self.num_heads == 0,
               f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"{name}={value} must be in [0, 1)")
        _check(self.type_vocab_size >= 0, f"type_vocab_size={self.type_vocab_size} must be >= 0")
        _check(0 <= self.pad_token_id < self.vocab_size,
               f"pad_token_id={self.pad_token_id} must be in [0, vocab_size={self.vocab_size})")
        _check(self.layer_norm_eps > 0, f"layer_norm_eps={self.layer_norm_eps} must be > 0")
        if self.position == "sinusoidal":
            _check(self.hidden_size % 2 == 0,
                   f"position=sinusoidal needs an even hidden_size, got {self.hidden_size}")
        if isinstance(self.attention, dict):
            self.attention = AttentionConfig.from_dict(self.attention)
        if self.long == "hierarchical":
            _check(self.hierarchical.segment_len <= self.max_len,
                   f"hierarchical.segment_len={self.hierarchical.segment_len} exceeds "
                   f"max_len={self.max_len}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    # -- presets / io ------------------------------------------------------------------------

    @classmethod
    def from_name(cls, name: str, **overrides) -> LanistrConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return from_dict(cls, {**PRESETS[name], **overrides}, "model")

    @classmethod
    def from_any(cls, data: dict, where: str = "model") -> LanistrConfig:
        """A mapping that may name a ``preset`` and override some of its fields."""
        data = dict(data or {})
        preset = data.pop("preset", None)
        if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
            raise ConfigError(f"{where}.preset: unknown preset {preset!r} "
                              f"(choose from {', '.join(PRESETS)})")
        base = dict(PRESETS[preset]) if preset else {}
        if "attention" in data and isinstance(base.get("attention"), dict):
            data["attention"] = {**base["attention"], **data["attention"]}
        return from_dict(cls, {**base, **data}, where)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> LanistrConfig:
        path = Path(path)
        data = _json(path.read_text(encoding="utf-8"), path)
        return from_dict(cls, data, "model")

    def replace(self, **changes) -> LanistrConfig:
        data = self.to_dict()
        for key, value in changes.items():
            data[key] = _plain(value) if not isinstance(value, AttentionConfig) else value.to_dict()
        return from_dict(type(self), data, "model")


_BERT_LAYOUT = dict(activation="gelu", position="learned", norm="post", type_vocab_size=2,
                    embed_scale=False, embed_layer_norm=True, layer_norm_eps=1e-12)

PRESETS: dict[str, dict] = {
    "tiny": dict(_BERT_LAYOUT, vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, ffn_dim=37,
                 max_len=64, dropout=0.0, attention_dropout=0.0),
    "mini": dict(_BERT_LAYOUT, hidden_size=256, num_layers=4, num_heads=4, ffn_dim=1024),
    "small": dict(_BERT_LAYOUT, hidden_size=512, num_layers=4, num_heads=8, ffn_dim=2048),
    "base": dict(_BERT_LAYOUT, hidden_size=768, num_layers=12, num_heads=12, ffn_dim=3072),
    # The original design: sinusoidal positions, embeddings scaled by sqrt(d), FFN 2048, ReLU,
    # post-norm residual blocks, no segment embeddings.
    "lanistr": dict(hidden_size=512, num_layers=6, num_heads=8, ffn_dim=2048, activation="relu",
                    position="sinusoidal", norm="post", type_vocab_size=0, embed_scale=True,
                    embed_layer_norm=False, layer_norm_eps=1e-5, dropout=0.1,
                    attention_dropout=0.1),
}


# --------------------------------------------------------------------------------------------
# training loop


@dataclass
class TrainConfig:
    """Hyper-parameters of the one training loop shared by every task."""

    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    # steps: warm-up and decay follow the step count (warmup_steps/warmup_ratio of the
    # steps). time: they follow the elapsed fraction of the max_minutes budget
    # (warmup_ratio of it), so the learning rate reaches 0 exactly at the budget, where the
    # run stops (a budgeted schedule, as in cramming; resumed runs keep the time used)
    schedule_by: Literal["steps", "time"] = "steps"
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    max_minutes: float = 0.0
    epochs: float = 0.0
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    keep_last: int = 2
    # bf16: autocast (matrix products in bfloat16, weights and optimizer in float32); auto:
    # bf16 where the device computes it natively, else fp32 (lanistr.precision), resolved
    # when the run starts and recorded as resolved
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    seed: int = 0
    # batches of examples of similar length (less padding), shuffled: for tasks whose
    # examples differ in length (fine-tuning); packed pretraining sequences are all alike
    group_by_length: bool = False
    num_threads: int = 0
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a CUDA GPU when there is one
    eval_batches: int = 0
    eval_at_start: bool = False  # also evaluate the untrained model (step 0)
    progress: bool = True  # a progress bar when stderr is a terminal
    # a fresh run into an output directory that holds another run's metrics/checkpoints:
    # False = refuse (continue it with --resume instead), True = replace them (--overwrite)
    overwrite_output: bool = False
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    # non-finite batches (loss, gradients or update) to skip, restoring the weights and
    # optimizer state of the last finite step, before training stops (0 = stop at the first)
    skip_nonfinite: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "keep_last", "log_every"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"train.{name}={value!r} must be >= 1")
        _check(self.lr > 0 and math.isfinite(self.lr), f"train.lr={self.lr} must be > 0")
        _check(self.max_steps >= 0, f"train.max_steps={self.max_steps} must be >= 0")
        _check(self.max_minutes >= 0, f"train.max_minutes={self.max_minutes} must be >= 0")
        _check(0 <= self.warmup_ratio < 1, f"train.warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        _check(self.max_grad_norm >= 0, f"train.max_grad_norm={self.max_grad_norm} must be >= 0")
        _check(self.weight_decay >= 0, f"train.weight_decay={self.weight_decay} must be >= 0")
        _check(isinstance(self.skip_nonfinite, int) and self.skip_nonfinite >= 0,
               f"train.skip_nonfinite={self.skip_nonfinite!r} must be >= 0")
        if self.schedule_by == "time":
            _check(self.max_minutes > 0, "train.schedule_by=time needs a time budget: set "
                   "train.max_minutes (the learning rate reaches 0 there)")
            _check(not self.warmup_steps, f"train.warmup_steps={self.warmup_steps} counts "
                   "steps; with train.schedule_by=time the warm-up is train.warmup_ratio of "
                   "the time budget")
