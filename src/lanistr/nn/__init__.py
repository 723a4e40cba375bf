"""The model, pure torch, no I/O except safetensors checkpoints in ``checkpoint``."""

from lanistr.nn.decoder import GenerationConfig, LanistrForSeq2Seq, LanistrForSeq2SeqCopy
from lanistr.nn.models import (
    LanistrForMaskedLM,
    LanistrForPreTraining,
    LanistrForSequenceClassification,
    LanistrForTokenClassification,
    LanistrModel,
    load_model,
)
from lanistr.nn.outputs import EncoderOutput, ModelOutput

__all__ = [
    "EncoderOutput",
    "GenerationConfig",
    "LanistrForMaskedLM",
    "LanistrForPreTraining",
    "LanistrForSeq2Seq",
    "LanistrForSeq2SeqCopy",
    "LanistrForSequenceClassification",
    "LanistrForTokenClassification",
    "LanistrModel",
    "ModelOutput",
    "load_model",
]
