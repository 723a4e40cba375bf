"""Export BERT-layout lanistr checkpoints as Hugging Face BERT directories.

The weight names are the exact inverse of :mod:`lanistr.convert.hf`'s tables (derived from
them, never written twice), so ``convert-hf`` then ``export --format hf`` gives back the same
tensors. The config is the inverse of :func:`lanistr.convert.hf.config_from_hf`; a field that
Hugging Face BERT has no way to express (sinusoidal positions, scaled embeddings, pre-norm, a
classifier without the BERT pooler, ...) is refused with one line naming it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from lanistr.config import LanistrConfig
from lanistr.convert.hf import LAYER_NAMES, NAMES, QKV_ORDER
from lanistr.export.base import (
    copy_tokenizer,
    load_checkpoint,
    model_max_length,
    output_directory,
    read_exportable_config,
    refuse,
)
from lanistr.io import write_text

TARGET = "Hugging Face BERT"
#: lanistr architecture -> the transformers class whose weights and outputs it matches.
HF_ARCHITECTURES = {
    "LanistrModel": "BertModel",
    "LanistrForMaskedLM": "BertForMaskedLM",
    "LanistrForPreTraining": "BertForPreTraining",
    "LanistrForSequenceClassification": "BertForSequenceClassification",
    "LanistrForTokenClassification": "BertForTokenClassification",
}
# transformers classes built without the pooler (BertModel(config, add_pooling_layer=False)).
_NO_POOLER = ("BertForMaskedLM", "BertForTokenClassification")
_INVERSE_NAMES = {name: hf_name for hf_name, name in NAMES.items()}
_INVERSE_LAYER = {name: hf_name for hf_name, name in LAYER_NAMES.items()}
# The BERT layout: (field, the value Hugging Face BERT has, why another value cannot be written).
_BERT_LAYOUT = (
    ("position", "learned", "it has learned absolute position embeddings only"),
    ("embed_scale", False, "it adds token embeddings unscaled, not x sqrt(hidden_size)"),
    ("embed_layer_norm", True, "it always normalises the embeddings"),
    ("norm", "post", "its layers are post-norm"),
    ("long", "none", "it has no hierarchical document encoder"),
)


def check_representable(config: LanistrConfig, src: Path) -> None:
    """Raise :class:`~lanistr.export.base.ExportError` naming the first field of ``config``
    that Hugging Face BERT cannot represent."""
    for field, value, why in _BERT_LAYOUT:
        if getattr(config, field) != value:
            raise refuse(src, TARGET, field, getattr(config, field), why)
    if config.type_vocab_size == 0:
        raise refuse(src, TARGET, "type_vocab_size", 0, "it always adds segment embeddings")
    if config.attention.backend != "full":
        raise refuse(src, TARGET, "attention.backend", config.attention.backend,
                     "it runs full attention only")
    if config.architecture in ("LanistrForSequenceClassification", "LanistrForPreTraining") \
            and not config.use_pooler:
        reads = "mean of the tokens" if config.pooling == "mean" else "first token itself"
        raise refuse(src, TARGET, "use_pooler", False,
                     f"{HF_ARCHITECTURES[config.architecture]} reads the BERT pooler "
                     f"(dense + tanh on [CLS]); this model reads the {reads}")


def hf_config(config: LanistrConfig) -> dict:
    """The Hugging Face ``config.json`` of a representable ``config`` (inverse of
    :func:`lanistr.convert.hf.config_from_hf`)."""
    out = {
        "architectures": [HF_ARCHITECTURES[config.architecture]],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn_dim,
        "hidden_act": config.activation,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "classifier_dropout": config.classifier_dropout,
        "max_position_embeddings": config.max_len,
        "position_embedding_type": "absolute",
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "initializer_range": config.initializer_range,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }
    if config.labels:
        out["id2label"] = {str(i): label for i, label in enumerate(config.labels)}
        out["label2id"] = {label: i for i, label in enumerate(config.labels)}
    return out


def hf_state(state: dict[str, torch.Tensor], config: LanistrConfig) -> dict[str, torch.Tensor]:
    """lanistr state dict -> Hugging Face BERT names for ``config.architecture`` (inverse of
    :func:`lanistr.convert.hf.convert_state`: the fused ``qkv`` is split into query/key/value).
    Tensors the transformers class has no place for (the pooler of an MLM or a tagger) are
    dropped; the MLM decoder is tied to the word embeddings there, as here."""
    arch = HF_ARCHITECTURES[config.architecture]
    flat = {k.removeprefix("model."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in flat.items():
        if name in _INVERSE_NAMES:
            out[_INVERSE_NAMES[name]] = tensor
            continue
        parts = name.split(".")  # encoder.layers.{i}.{sub...}.{weight|bias}
        if parts[:2] != ["encoder", "layers"]:
            raise ValueError(f"no Hugging Face name for tensor {name}")
        pre, sub, part = f"encoder.layer.{parts[2]}.", ".".join(parts[3:-1]), parts[-1]
        if sub == "attention.qkv":
            for hf_sub, chunk in zip(QKV_ORDER, tensor.chunk(len(QKV_ORDER), 0)):
                out[f"{pre}attention.self.{hf_sub}.{part}"] = chunk
        else:
            out[f"{pre}{_INVERSE_LAYER[sub]}.{part}"] = tensor
    if arch in _NO_POOLER:
        out = {k: v for k, v in out.items() if not k.startswith("pooler.")}
    if arch != "BertModel":  # the encoder sits under `bert.` in the task models
        out = {("bert." + k if k.startswith(("embeddings.", "encoder.", "pooler.")) else k): v
               for k, v in out.items()}
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def export_hf(src: str | Path, out: str | Path, *, overwrite: bool = False) -> str:
    """Write checkpoint ``src`` as a Hugging Face BERT directory ``out``; returns the
    transformers class name (``BertForSequenceClassification``, ...)."""
    from safetensors.torch import save_file

    src = Path(src)
    config = read_exportable_config(src, TARGET)
    check_representable(config, src)
    model = load_checkpoint(src)
    state = hf_state(model.state_dict(), config)
    from lanistr.tasks.run_config import read_meta

    settings = hf_config(config)
    meta = read_meta(src)
    max_len = model_max_length(src, config, meta)
    head_tail = meta.get("truncation") == "head_tail"
    if head_tail:
        settings["lanistr_truncation"] = "head_tail"
    with output_directory(src, out, overwrite) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_text(tmp / "config.json", json.dumps(settings, indent=2) + "\n")
        copy_tokenizer(src, tmp, max_len)
    if head_tail:  # once the export is written (a refused output path says only that)
        warnings.warn(f"{src} was fine-tuned on the head and tail of texts longer than "
                      f"{max_len} tokens (data.truncation=head_tail); a Hugging Face tokenizer "
                      "keeps only their head, so the export reads long texts differently "
                      "(`lanistr predict` and the ONNX export read them as trained)", stacklevel=2)
    return HF_ARCHITECTURES[config.architecture]

