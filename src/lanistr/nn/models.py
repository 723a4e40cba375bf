"""LANISTR models: the encoder and its task heads, with ``save_pretrained``/``from_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.attention import AttentionBackend
from lanistr.nn.encoder import Encoder
from lanistr.nn.heads import ClassificationHead, MLMHead, Pooler
from lanistr.nn.outputs import ModelOutput


def init_weights(module: nn.Module, std: float) -> None:
    """BERT initialisation (normal(0, std), zero bias, unit LayerNorm); attention backends
    with parameters of their own keep their own initialisation."""
    for child in module.children():
        if isinstance(child, AttentionBackend):
            continue
        if isinstance(child, nn.Linear):
            nn.init.normal_(child.weight, std=std)
            nn.init.zeros_(child.bias)
        elif isinstance(child, nn.Embedding):
            nn.init.normal_(child.weight, std=std)
            if child.padding_idx is not None:
                with torch.no_grad():
                    child.weight[child.padding_idx].zero_()
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        init_weights(child, std)


class PreTrainedModel(nn.Module):
    """Shared checkpoint behaviour. ``head_prefixes`` name the task-specific parameters: when
    loading a checkpoint without them they are freshly initialised (with a warning)."""

    base_prefix: ClassVar[str] = "model."
    head_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: LanistrConfig):
        super().__init__()
        self.config = config

    def post_init(self) -> None:
        init_weights(self, self.config.initializer_range)

    def save_pretrained(self, directory: str | Path) -> None:
        from lanistr.checkpoint import save_model

        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **config_overrides):
        """Load ``config.json`` + ``model.safetensors``; ``config_overrides`` change fields
        (e.g. ``labels=[...]`` for a new head, ``attention={...}`` to switch backend)."""
        from lanistr.checkpoint import load_model_from

        return load_model_from(cls, directory, **config_overrides)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def uses_every_parameter(self) -> bool:
        """True when a training forward reaches every parameter, so that data-parallel
        training can skip DDP's per-step search for unused ones
        (``find_unused_parameters=False``). False, the safe answer, unless the model knows:
        e.g. a BERT pooler that MLM pretraining computes but no loss reads is unused. Every
        built-in attention backend uses all of its parameters (LSH's shared QK still reads
        the q and v rows of ``qkv``)."""
        return False


class LanistrModel(PreTrainedModel):
    """The bare encoder (+ optional BERT pooler)."""

    base_prefix = ""
    head_prefixes = ("pooler.",)

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if config.use_pooler else None
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, *, output_attentions: bool = False,
                output_hidden_states: bool = False) -> ModelOutput:
        enc = self.encoder(input_ids, attention_mask, token_type_ids,
                           output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states)
        h = enc.last_hidden_state  # (B, T, D)
        return ModelOutput(last_hidden_state=h, hidden_states=enc.hidden_states,
                           attentions=enc.attentions, pooled=self.pool(h, attention_mask))

    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The sequence vector (B, D) of last hidden states (B, T, D)."""
        if self.pooler is not None:
            pooled = self.pooler(h[:, 0])
        elif self.config.pooling == "mean" and attention_mask is not None:
            m = attention_mask.to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        elif self.config.pooling == "mean":
            pooled = h.mean(1)
        else:
            pooled = h[:, 0]  # the first token ([CLS]), as in the design
        return pooled

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.encoder.embeddings.token


class _WithEncoder(PreTrainedModel):
    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.model = LanistrModel(config)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, *,
               output_attentions=False, output_hidden_states=False) -> ModelOutput:
        return self.model(input_ids, attention_mask, token_type_ids,
                          output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states)


class LanistrForMaskedLM(_WithEncoder):
    """Encoder + BERT MLM head. With ``mlm_positions`` (bool (B, T)) the vocabulary logits are
    computed only there: ``logits`` is then ``(M, V)`` in row-major order of the positions."""

    head_prefixes = ("mlm_head.", "model.pooler.")

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.mlm_head = MLMHead(config, self.model.token_embedding)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                mlm_positions: torch.Tensor | None = None, output_attentions=False,
                output_hidden_states=False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids,
                          output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states)
        h = out.last_hidden_state
        out.logits = self.mlm_head(h[mlm_positions] if mlm_positions is not None else h)
        return out

    @property
    def uses_every_parameter(self) -> bool:
        return self.model.pooler is None  # MLM reads no pooled vector


class LanistrForPreTraining(LanistrForMaskedLM):
    """MLM + next-sentence prediction (on the pooled first token)."""

    head_prefixes = ("mlm_head.", "nsp_head.", "model.pooler.")

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.nsp_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                mlm_positions=None, output_attentions=False,
                output_hidden_states=False) -> ModelOutput:
        out = super().forward(input_ids, attention_mask, token_type_ids,
                              mlm_positions=mlm_positions, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states)
        out.nsp_logits = self.nsp_head(out.pooled)
        return out

    @property
    def uses_every_parameter(self) -> bool:
        return True  # NSP reads the pooled vector


class _Classifier(_WithEncoder):
    """Encoder + a linear classifier over ``config.labels``."""

    head_prefixes = ("classifier.", "model.pooler.")
    per_token: ClassVar[bool] = False

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.classifier = ClassificationHead(config, max(config.num_labels, 1))
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                output_attentions=False, output_hidden_states=False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids,
                          output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states)
        # (B, T, L) per token, else (B, L) from the pooled sequence vector
        out.logits = self.classifier(out.last_hidden_state if self.per_token else out.pooled)
        return out

    @property
    def uses_every_parameter(self) -> bool:
        return not self.per_token or self.model.pooler is None  # per token: no pooled vector

    def logits_from_layer(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                          start: int) -> torch.Tensor:
        """Logits from the real tokens' states ``(N, D)`` entering encoder layer ``start``
        (the output of ``Encoder.lower``, e.g. cached): the same as ``forward(...).logits``."""
        from lanistr.nn.layers import TokenLayout

        b, t = attention_mask.shape
        h = self.model.encoder.upper(hidden, TokenLayout.from_mask(attention_mask, b, t), start)
        return self.classifier(h if self.per_token else self.model.pool(h, attention_mask))


class LanistrForSequenceClassification(_Classifier):
    """Classify from the first token (the design), mean pooling, or the BERT pooler."""


class LanistrForTokenClassification(_Classifier):
    """A label per token (tagging)."""

    per_token = True


ARCHITECTURES: dict[str, type[PreTrainedModel]] = {
    cls.__name__: cls
    for cls in (LanistrModel, LanistrForMaskedLM, LanistrForPreTraining,
                LanistrForSequenceClassification, LanistrForTokenClassification)
}


def register_architecture(cls: type[PreTrainedModel]) -> type[PreTrainedModel]:
    """Make ``load_model`` know a model class defined elsewhere (seq2seq, domain heads)."""
    ARCHITECTURES[cls.__name__] = cls
    return cls


def load_model(directory: str | Path, **config_overrides) -> PreTrainedModel:
    """Load a checkpoint as the architecture recorded in its ``config.json``."""
    from lanistr.checkpoint import read_config

    config = read_config(directory)
    name = config.architecture
    if name not in ARCHITECTURES:
        from lanistr.errors import CheckpointError

        raise CheckpointError(f"{directory}/config.json: unknown architecture {name!r} "
                              f"(known: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[name].from_pretrained(directory, **config_overrides)
