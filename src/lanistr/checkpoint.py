"""Checkpoint directories: ``config.json`` + ``model.safetensors``, written atomically.

Loading never unpickles anything: weights come from safetensors only. Problems are reported
as :class:`~lanistr.errors.CheckpointError` naming the file, the tensor and both shapes.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch

from lanistr.config import LanistrConfig, from_dict
from lanistr.errors import CheckpointError, ConfigError
from lanistr.io import atomic_path, write_text

log = logging.getLogger("lanistr")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_model(model, directory: str | os.PathLike) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (each atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.architecture = type(model).__name__
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "lanistr": "1"})
    write_text(directory / CONFIG_NAME, model.config.to_json())


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold one object; anything else is a one-line CheckpointError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_config(directory: str | os.PathLike, **overrides) -> LanistrConfig:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a lanistr checkpoint (missing {CONFIG_NAME}); "
                              "for a Hugging Face model run `lanistr convert-hf` first")
    data = read_json_object(path)
    for key, value in overrides.items():
        if key == "attention" and isinstance(value, dict):
            value = {**data.get("attention", {}), **value} if value.get("backend") in (
                None, data.get("attention", {}).get("backend")) else value
        data[key] = value.to_dict() if hasattr(value, "to_dict") else value
    try:
        return from_dict(LanistrConfig, data, "model")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{Path(directory)}: missing {WEIGHTS_NAME}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def _remap(state: dict[str, torch.Tensor], base_prefix: str) -> dict[str, torch.Tensor]:
    """Adapt a checkpoint saved from a bare encoder to a head model and vice versa."""
    saved_bare = not any(k.startswith("model.") for k in state)
    if base_prefix and saved_bare:
        return {base_prefix + k: v for k, v in state.items()}
    if not base_prefix and not saved_bare:
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return state


def load_state(model, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy ``state`` into ``model``; return the names of freshly initialised tensors.

    Missing encoder tensors are an error (config/weights mismatch); missing head tensors and
    attention-backend parameters (e.g. after switching to Linformer) keep their fresh init.
    """
    state = _remap(state, model.base_prefix)
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)} in the checkpoint but "
                f"the model expects {tuple(expected[name].shape)} (config/weights mismatch)")
    missing = [k for k in expected if k not in state]
    fresh_ok = model.head_prefixes
    hard = [k for k in missing if not k.startswith(fresh_ok) and ".backend." not in k]
    if hard:
        more = f" and {len(hard) - 3} more" if len(hard) > 3 else ""
        raise CheckpointError(f"{source}: missing tensor{'s' if len(hard) > 1 else ''} "
                              f"{', '.join(hard[:3])}{more}; the weights do not match config.json")
    with torch.no_grad():
        for name, tensor in expected.items():
            if name in state:
                tensor.copy_(state[name])
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        log.info("%s: ignored %d tensors not used by %s (e.g. %s)", source, len(unexpected),
                 type(model).__name__, unexpected[0])
    return missing


def load_model_from(cls, directory: str | os.PathLike, *, labels: list[str] | None = None,
                    new_head_expected: bool = False, **config_overrides):
    """``cls`` with the weights of checkpoint ``directory``. ``labels``: a model for this label
    set; a classifier head saved for other labels (or another architecture) is dropped and
    freshly initialised. Tensors the checkpoint lacks (a new head, a new backend's
    parameters) are initialised fresh and named in a warning (a log line where
    ``new_head_expected``)."""
    saved = read_config(directory)
    if labels is not None:
        config_overrides = {**config_overrides, "labels": labels}
    config = read_config(directory, **config_overrides)
    state = read_weights(directory)
    if labels is not None and (saved.labels != labels or saved.architecture != cls.__name__):
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    model = cls(config)
    fresh = load_state(model, state, str(Path(directory) / WEIGHTS_NAME))
    if fresh:
        groups = sorted({k.rsplit(".", 2)[0] for k in fresh})
        names = f"{', '.join(groups[:4])}{', ...' if len(groups) > 4 else ''}"
        if new_head_expected:  # a new head is the point of loading for a task: not a warning
            log.info("initialised %d new tensors (%s)", len(fresh), names)
        else:
            warnings.warn(f"{type(model).__name__}: {len(fresh)} tensors were not in {directory} "
                          f"and are freshly initialised ({names}); train them before use",
                          stacklevel=3)
    model.config.architecture = cls.__name__
    return model


def load_with_new_head(cls, init: str | os.PathLike, labels: list[str], overrides: dict):
    """``cls`` with the encoder weights of checkpoint ``init`` and a head for ``labels``
    (kept from the checkpoint when it was trained for exactly these labels)."""
    return load_model_from(cls, init, labels=labels, new_head_expected=True, **overrides)


def load_seq2seq_from_encoder(cls, directory: str | os.PathLike, *,
                              decoder_layers: int | None = None, vocab_size: int | None = None,
                              decoder_init: str = "encoder", **config_overrides):
    """A seq2seq model (``cls``, e.g. ``LanistrForSeq2Seq``) built on the encoder checkpoint
    ``directory``; see :meth:`lanistr.nn.LanistrForSeq2Seq.from_encoder`."""
    config = read_config(directory, **config_overrides)
    model, state = cls.from_encoder_state(config, read_weights(directory),
                                          decoder_layers=decoder_layers, vocab_size=vocab_size,
                                          decoder_init=decoder_init)
    with warnings.catch_warnings():  # the decoder's new tensors are the point
        warnings.simplefilter("ignore")
        load_state(model, state, str(Path(directory) / WEIGHTS_NAME))
    return model


GENERATION_CONFIG = "generation_config.json"


def save_generation_config(generation, directory: str | os.PathLike) -> None:
    """Write a :class:`~lanistr.nn.GenerationConfig` beside a seq2seq checkpoint."""
    import dataclasses

    from lanistr.io import write_json

    write_json(Path(directory) / GENERATION_CONFIG, dataclasses.asdict(generation))


def read_generation_config(directory: str | os.PathLike):
    """The :class:`~lanistr.nn.GenerationConfig` saved beside a seq2seq checkpoint."""
    from lanistr.errors import LanistrError
    from lanistr.nn.decoder import GenerationConfig

    path = Path(directory) / GENERATION_CONFIG
    if not path.is_file():
        raise LanistrError(f"{directory}: no {GENERATION_CONFIG}; is this a seq2seq model "
                           "trained with `lanistr finetune` (task: seq2seq)?")
    data = read_json_object(path)
    try:
        return from_dict(GenerationConfig, data, "generation")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
