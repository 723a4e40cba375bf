"""The model, pure torch, no I/O except safetensors checkpoints in ``checkpoint``."""

# Every module that defines an architecture is imported here, so the registry behind
# ``load_model`` is complete whichever module a caller imported first.
from lanistr.nn.decoder import GenerationConfig, LanistrForSeq2Seq, LanistrForSeq2SeqCopy
from lanistr.nn.domain import LanistrForDomainClassification
from lanistr.nn.hierarchical import LanistrForDocumentClassification
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
    "LanistrForDocumentClassification",
    "LanistrForDomainClassification",
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
