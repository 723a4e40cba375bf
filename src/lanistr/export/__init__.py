"""Export lanistr checkpoints for other runtimes.

- :func:`~lanistr.export.hf.export_hf`: a Hugging Face BERT directory (``config.json`` +
  ``model.safetensors`` + tokenizer) that ``transformers`` loads with its Auto classes; the
  weight names are the inverse of :mod:`lanistr.convert.hf`'s tables.
- :func:`~lanistr.export.onnx.export_onnx`: ``model.onnx`` (+ ``model.int8.onnx`` with dynamic
  int8 quantization), the lanistr ``config.json``, the tokenizer and ``export.json``;
  :class:`~lanistr.export.onnx.OnnxRunner` runs it with onnxruntime and is what
  ``Predictor(runtime="onnx")`` calls.

Both refuse, with one line naming the field and its value, a model they cannot represent.
"""

from __future__ import annotations

from lanistr.export.hf import export_hf
from lanistr.export.onnx import OnnxRunner, export_onnx

__all__ = ["OnnxRunner", "export_hf", "export_onnx"]
