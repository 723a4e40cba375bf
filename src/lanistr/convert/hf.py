"""Import Hugging Face BERT checkpoints (BertModel, BertForMaskedLM, BertForPreTraining,
BertForSequenceClassification, BertForTokenClassification) into lanistr checkpoints.

Only ``model.safetensors`` is read: a ``pytorch_model.bin`` is a pickle and is refused.
The mapping is a table of names; q/k/v projections are concatenated into the fused ``qkv``.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch

from lanistr.checkpoint import read_json_object, read_weights
from lanistr.config import LanistrConfig
from lanistr.errors import CheckpointError
from lanistr.io import atomic_path

log = logging.getLogger("lanistr")

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

_LAYER = {
    "attention.output.dense": "attention.out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "ffn.fc1",
    "output.dense": "ffn.fc2",
    "output.LayerNorm": "ffn_norm",
}
_TOP = {
    "embeddings.word_embeddings.weight": "encoder.embeddings.token.weight",
    "embeddings.position_embeddings.weight": "encoder.embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "encoder.embeddings.segment.weight",
    "embeddings.LayerNorm.weight": "encoder.embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "encoder.embeddings.norm.bias",
    "pooler.dense.weight": "pooler.dense.weight",
    "pooler.dense.bias": "pooler.dense.bias",
}
_HEADS = {
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.norm.bias",
    "cls.predictions.bias": "mlm_head.bias",
    "cls.seq_relationship.weight": "nsp_head.weight",
    "cls.seq_relationship.bias": "nsp_head.bias",
    "classifier.weight": "classifier.out.weight",
    "classifier.bias": "classifier.out.bias",
}
# Public views of the tables, read by the exporter (lanistr.export.hf inverts them): Hugging
# Face name -> lanistr name outside the layers, inside layer i, and the order of the q/k/v rows
# in the fused ``qkv`` projection.
NAMES: dict[str, str] = {**_TOP, **_HEADS}
LAYER_NAMES: dict[str, str] = dict(_LAYER)
QKV_ORDER: tuple[str, ...] = ("query", "key", "value")


def config_from_hf(hf: dict, source: str = "config.json") -> LanistrConfig:
    if hf.get("model_type", "bert") != "bert":
        raise CheckpointError(f"{source}: model_type={hf.get('model_type')!r}; only BERT "
                              "checkpoints (model_type 'bert') can be converted")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type="
                              f"{hf['position_embedding_type']!r} is not supported (absolute only)")
    act = {"gelu": "gelu", "relu": "relu"}.get(hf.get("hidden_act", "gelu"))
    if act is None:
        raise CheckpointError(f"{source}: hidden_act={hf.get('hidden_act')!r} is not supported "
                              "(gelu or relu)")
    id2label = hf.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else []
    return LanistrConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"], activation=act,
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        max_len=hf.get("max_position_embeddings", 512), position="learned", norm="post",
        type_vocab_size=hf.get("type_vocab_size", 2), embed_scale=False, embed_layer_norm=True,
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), pad_token_id=hf.get("pad_token_id") or 0,
        initializer_range=hf.get("initializer_range", 0.02), labels=labels,
    )


def convert_state(hf_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Hugging Face BERT names -> lanistr names (bare-encoder layout, heads at top level)."""
    state = {}
    hf_state = {(k[5:] if k.startswith("bert.") else k): v for k, v in hf_state.items()}
    hf_state = {k.replace("LayerNorm.gamma", "LayerNorm.weight")
                .replace("LayerNorm.beta", "LayerNorm.bias"): v for k, v in hf_state.items()}
    for hf_name, name in NAMES.items():
        if hf_name in hf_state:
            state[name] = hf_state[hf_name]
    for i in range(num_layers):
        pre = f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            qkv = [hf_state.get(f"{pre}attention.self.{p}.{part}") for p in QKV_ORDER]
            if any(t is None for t in qkv):
                raise CheckpointError(f"missing {pre}attention.self.query/key/value.{part}")
            state[f"encoder.layers.{i}.attention.qkv.{part}"] = torch.cat(qkv, 0)
            for hf_sub, sub in LAYER_NAMES.items():
                key = f"{pre}{hf_sub}.{part}"
                if key not in hf_state:
                    raise CheckpointError(f"missing tensor {key}")
                state[f"encoder.layers.{i}.{sub}.{part}"] = hf_state[key]
    return state


def convert_hf(src: str | Path, out: str | Path):
    """Convert a Hugging Face BERT directory; returns the loaded lanistr model."""
    from lanistr.nn.models import (
        LanistrForMaskedLM,
        LanistrForPreTraining,
        LanistrForSequenceClassification,
        LanistrForTokenClassification,
    )

    src, out = Path(src), Path(out)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{src}: no config.json (expected a Hugging Face BERT directory)")
    if not (src / "model.safetensors").is_file():
        hint = (" (pytorch_model.bin is a pickle and is never loaded: re-save it with "
                "save_pretrained(..., safe_serialization=True))"
                if (src / "pytorch_model.bin").exists() else "")
        raise CheckpointError(f"{src}: no model.safetensors{hint}")
    hf_config = read_json_object(cfg_path)
    if "architecture" in hf_config and "num_hidden_layers" not in hf_config:
        raise CheckpointError(f"{src}: is a lanistr checkpoint already (config.json has "
                              f"architecture={hf_config['architecture']!r}); use it as it is "
                              "(init: / --model), there is nothing to convert")
    try:
        config = config_from_hf(hf_config, str(cfg_path))
    except KeyError as exc:
        raise CheckpointError(f"{cfg_path}: missing field {exc} (expected a Hugging Face BERT "
                              "config.json)") from None
    state = convert_state(read_weights(src), config.num_layers)
    config.use_pooler = "pooler.dense.weight" in state
    if "classifier.out.weight" in state:
        tagger = "BertForTokenClassification" in (hf_config.get("architectures") or [])
        cls = LanistrForTokenClassification if tagger else LanistrForSequenceClassification
        if not config.labels:
            config.labels = [f"LABEL_{i}" for i in range(state["classifier.out.weight"].shape[0])]
    elif "nsp_head.weight" in state:
        cls = LanistrForPreTraining
    else:
        cls = LanistrForMaskedLM
        if "mlm_head.bias" not in state:
            warnings.warn(f"{src} has no MLM head (a bare BertModel): the converted "
                          "LanistrForMaskedLM has a freshly initialised one; pretrain or adapt "
                          "it (lanistr adapt dapt) before using its MLM predictions",
                          stacklevel=2)
    model = cls(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lanistr.checkpoint import load_state

        load_state(model, {("model." + k if k.startswith(("encoder.", "pooler.")) else k): v
                           for k, v in state.items()}, str(src / "model.safetensors"))
    model.eval()
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
    return model
