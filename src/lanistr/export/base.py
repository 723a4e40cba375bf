"""What every export shares: the checkpoint it reads, the directory it writes, the tokenizer
files it carries, and the one-line refusal of a model it cannot represent."""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from lanistr.checkpoint import read_config
from lanistr.config import LanistrConfig
from lanistr.errors import CheckpointError, LanistrError
from lanistr.io import atomic_path, write_json

#: The BERT-layout models an export can take (the seq2seq, hierarchical and domain models
#: are not among them).
EXPORTABLE = ("LanistrModel", "LanistrForMaskedLM", "LanistrForPreTraining",
              "LanistrForSequenceClassification", "LanistrForTokenClassification")
#: Files of a Hugging Face / lanistr tokenizer that an export copies when the checkpoint has them.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


class ExportError(LanistrError):
    """A checkpoint that the requested format cannot represent, or a bad output path."""


def refuse(src: Path, target: str, field: str, value, why: str) -> ExportError:
    """The one-line error for a config field ``target`` cannot represent."""
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return ExportError(f"{src}: model.{field}={shown} cannot be exported to {target} ({why})")


def read_exportable_config(src: str | Path, target: str) -> LanistrConfig:
    """The config of checkpoint ``src``, refused unless its architecture is exportable."""
    config = read_config(src)
    if config.architecture not in EXPORTABLE:
        raise refuse(Path(src), target, "architecture", config.architecture,
                     f"exportable: {', '.join(EXPORTABLE)}")
    return config


def load_checkpoint(src: str | Path):
    """The checkpoint's model in eval mode (weights from safetensors only)."""
    from lanistr.nn.models import load_model

    return load_model(src).eval()


@contextlib.contextmanager
def output_directory(src: str | Path, out: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` when the block succeeds.

    ``out`` must not be a file, nor ``src`` itself, nor a non-empty directory unless
    ``overwrite``; on an error nothing at ``out`` changes.
    """
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; the export is a directory, give a new path")
    if out.is_dir() and src.is_dir() and out.resolve() == src.resolve():
        raise ExportError(f"{out}: is the checkpoint being exported; give another directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: directory is not empty; pass --overwrite to replace it")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        yield tmp


def copy_tokenizer(src: Path, dst: Path, max_len: int) -> bool:
    """Copy the checkpoint's tokenizer files into ``dst``; False (with a warning) if it has none.

    ``tokenizer_config.json`` gets ``model_max_length`` (``max_len``) when it does not say
    it, so that ``transformers`` truncates where the model stops.
    """
    names = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not any(name in names for name in ("vocab.txt", "tokenizer.json")):
        warnings.warn(f"{src} holds no tokenizer (vocab.txt or tokenizer.json): the export has "
                      "none; copy one into it before tokenizing with it", stacklevel=3)
        return False
    for name in names:
        shutil.copy2(src / name, dst / name)
    path = dst / "tokenizer_config.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{src / path.name}: invalid JSON ({exc})") from None
    settings.setdefault("tokenizer_class", "BertTokenizer")
    settings.setdefault("model_max_length", max_len)
    write_json(path, settings)
    return True


def model_max_length(src: Path, config: LanistrConfig, meta: dict | None = None) -> int:
    """The length the model was fine-tuned at (``finetune.json``, or ``meta`` where the caller
    read it already), else its ``max_len``."""
    from lanistr.tasks.run_config import META_FILE

    if meta is not None:
        return int(meta.get("max_len") or config.max_len)
    path = src / META_FILE
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get("max_len") or config.max_len)
    except (OSError, ValueError, AttributeError):
        return config.max_len
