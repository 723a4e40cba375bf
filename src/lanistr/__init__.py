"""lanistr: LANguage INSTance Representation, a toolkit for Transformer-encoder language models."""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "LanistrConfig": "lanistr.config",
    "AttentionConfig": "lanistr.config",
    "LanistrModel": "lanistr.nn.models",
    "LanistrForMaskedLM": "lanistr.nn.models",
    "LanistrForPreTraining": "lanistr.nn.models",
    "LanistrForSequenceClassification": "lanistr.nn.models",
    "LanistrForTokenClassification": "lanistr.nn.models",
    "Tokenizer": "lanistr.data.tokenizer",
    "load": "lanistr.api",
    "InferenceModel": "lanistr.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    # Lazy so that `lanistr --help` does not import torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lanistr' has no attribute {name!r}")
