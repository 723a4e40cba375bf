"""The Python API: :func:`load` a checkpoint, then ask it for what it can do.

>>> import lanistr
>>> m = lanistr.load("runs/spam/model")                  # device="cpu" | "cuda" | "auto"
>>> m.classify(["WIN a FREE cruise now!!!"])
[{'label': 'spam', 'score': 0.98, 'probabilities': {'ham': 0.02, 'spam': 0.98}}]
>>> m.embed(["a sentence", "another one"]).shape      # any checkpoint with an encoder
(2, 384)

What each kind of checkpoint supports (:attr:`InferenceModel.capabilities`):

=================================  ==============================================
classifier (``task: classify``)    ``classify``, ``embed``, ``attention``
tagger (``task: tag``)             ``tag``, ``embed``, ``attention``
seq2seq (``task: seq2seq``)        ``generate``, ``embed``, ``attention`` (encoder)
any other encoder (bare, MLM, ...)  ``embed``, ``attention``
=================================  ==============================================

Asking for anything else raises :class:`~lanistr.errors.LanistrError` with a one-line reason.
Everything runs through the same :class:`~lanistr.tasks.predict.Predictor` /
:class:`~lanistr.tasks.seq2seq.Seq2SeqPredictor` as ``lanistr predict`` and ``lanistr
generate``: one path from a checkpoint to an answer. Results are plain Python (lists, dicts,
floats) except :meth:`InferenceModel.embed`, a float32 numpy array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lanistr.errors import LanistrError

if TYPE_CHECKING:
    import torch

TASKS = ("classify", "tag", "generate", "embed", "attention")
_SUPPORTS = {
    "classify": ("classify", "embed", "attention"),
    "tag": ("tag", "embed", "attention"),
    "generate": ("generate", "embed", "attention"),
    "encode": ("embed", "attention"),
}
_WHAT = {"classify": "a classifier", "tag": "a tagger", "generate": "a seq2seq model",
         "encode": "an encoder without a task head"}


def load(model_dir: str | Path, device: str | torch.device = "cpu", runtime: str = "torch",
         **options) -> InferenceModel:
    """The checkpoint in ``model_dir`` (a ``lanistr finetune``/``pretrain``/``convert-hf``
    output), ready for inference. ``device``: ``cpu``, ``cuda`` or ``auto`` (a GPU when there
    is one). ``runtime``: ``torch`` or ``onnx`` (``model_dir`` is then a ``lanistr export
    --format onnx`` output; classification and tagging only). ``options`` go to the
    :class:`~lanistr.tasks.predict.Predictor` (``windows``, ``stride``, ``overrides``)."""
    return InferenceModel(model_dir, device=device, runtime=runtime, **options)




def _texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise LanistrError(f"{what} must be a list of strings, got {type(texts).__name__} "
                           "(wrap a single text in a list)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise LanistrError(f"{what}[{i}] must be a string, got {type(t).__name__}")
    return list(texts)


class InferenceModel:
    """A loaded checkpoint. ``task`` is ``classify``, ``tag``, ``generate`` or ``encode``;
    ``capabilities`` lists the methods that apply to it."""

    def __init__(self, model_dir: str | Path, *, device: str | torch.device = "cpu",
                 runtime: str = "torch", **options):
        self.model_dir = Path(model_dir)
        if runtime not in ("torch", "onnx"):
            raise LanistrError(f"runtime={runtime!r}: choose torch or onnx")
        if runtime == "torch" and not (self.model_dir / "config.json").is_file():
            what = "no such directory" if not self.model_dir.exists() else "no config.json in it"
            raise LanistrError(f"{self.model_dir}: not a lanistr checkpoint ({what}); give the "
                               "directory written by `lanistr finetune`, `pretrain` or "
                               "`convert-hf`")
        self.runtime = runtime
        from lanistr.distributed import resolve_device

        self.device = resolve_device("cpu" if runtime == "onnx" and str(device) == "auto"
                                     else device)
        from lanistr.tasks.seq2seq import is_seq2seq_model

        if runtime == "torch" and is_seq2seq_model(self.model_dir):
            from lanistr.tasks.seq2seq import Seq2SeqPredictor

            overrides = options.pop("overrides", None)
            if options:
                raise LanistrError(f"{self.model_dir} is a seq2seq model: options "
                                   f"{sorted(options)} apply to classifiers and taggers")
            extra = {"overrides": overrides} if overrides else {}
            self.predictor = Seq2SeqPredictor(self.model_dir, self.device, **extra)
            self.task = "generate"
            self.labels: list[str] = []
            self.max_len = int(self.predictor.generation.max_source_len)
        else:
            from lanistr.tasks.predict import Predictor

            if runtime != "torch":
                options["runtime"] = runtime
            self.predictor = Predictor(self.model_dir, self.device, any_encoder=True, **options)
            self.model_dir = self.predictor.model_dir
            self.task = self.predictor.kind
            self.labels = list(self.predictor.labels)
            self.max_len = int(self.predictor.max_len)
        self.capabilities: tuple[str, ...] = _SUPPORTS[self.task]
        if runtime == "onnx":  # the graph gives logits, or hidden states for a bare encoder
            hidden = "last_hidden_state" in getattr(self.predictor.model, "output_names", ())
            self.capabilities = ("embed",) if hidden else ((self.task,) if self.task in
                                                           ("classify", "tag") else ())

    def __repr__(self) -> str:
        return (f"InferenceModel({str(self.model_dir)!r}, task={self.task!r}, "
                f"device={str(self.device)!r}, runtime={self.runtime!r})")

    @property
    def config(self):
        return self.predictor.model.config

    def info(self) -> dict[str, Any]:
        """What the checkpoint is: model dir, task, labels, max_len, runtime, device,
        architecture, hidden size, capabilities."""
        config = self.config
        return {"model": str(self.model_dir), "task": self.task, "labels": list(self.labels),
                "max_len": self.max_len, "runtime": self.runtime, "device": str(self.device),
                "architecture": config.architecture, "hidden_size": config.hidden_size,
                "layers": config.num_layers, "heads": config.num_heads,
                "capabilities": list(self.capabilities)}

    def require(self, method: str) -> None:
        """Raise a one-line :class:`LanistrError` unless ``method`` applies to this model."""
        if method in self.capabilities:
            return
        use = ", ".join("." + c for c in self.capabilities) or "runtime torch"
        if self.runtime == "onnx" and method in _SUPPORTS[self.task]:
            gives = "hidden states" if self.task == "encode" else "logits"
            raise LanistrError(f"{self.model_dir}: .{method} needs runtime torch (this ONNX "
                               f"export gives only its {gives}); use {use}")
        hint = ""
        if self.task == "encode" and method in ("classify", "tag"):
            hint = " (fine-tune it with `lanistr finetune` first)"
        raise LanistrError(f"{self.model_dir} is {_WHAT[self.task]}: it cannot {method}; "
                           f"use {use}{hint}")

    # -- tasks ------------------------------------------------------------------------------

    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                 batch_size: int = 32) -> list[dict]:
        """One ``{"label", "score", "probabilities": {label: p}}`` per text (in order);
        ``pairs``: second texts for a model fine-tuned on text pairs."""
        self.require("classify")
        texts = _texts(texts)
        if pairs is not None:
            pairs = _texts(pairs, "pairs")
            if len(pairs) != len(texts):
                raise LanistrError(f"{len(texts)} texts but {len(pairs)} pairs")
        if not texts:
            return []
        probs, _ = self.predictor.classify(texts, pairs, batch_size)
        out = []
        for row in probs:
            best = int(row.argmax())
            out.append({"label": self.labels[best], "score": float(row[best]),
                        "probabilities": {name: float(p) for name, p in zip(self.labels, row)}})
        return out

    def tag(self, texts: Sequence[str] | Sequence[Sequence[str]], *,
            batch_size: int = 32) -> list[dict]:
        """One ``{"words", "tags"}`` per text: a text is split on whitespace (or give each
        as a list of words already)."""
        self.require("tag")
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            _texts(texts)  # raises the one-line error
        words = []
        for i, t in enumerate(texts):
            if isinstance(t, str):
                words.append(t.split())
            elif isinstance(t, Sequence) and all(isinstance(w, str) for w in t):
                words.append(list(t))
            else:
                raise LanistrError(f"texts[{i}] must be a string or a list of words, got "
                                   f"{type(t).__name__}")
        if not words:
            return []
        tags, _ = self.predictor.tag(words, batch_size)
        return [{"words": w, "tags": t} for w, t in zip(words, tags)]

    def generate(self, texts: Sequence[str], *, batch_size: int = 32, **generation) -> list[str]:
        """The output text of each source; ``generation`` overrides the saved settings
        (``num_beams``, ``max_new_tokens``, ``length_penalty``, ``use_cache``)."""
        self.require("generate")
        texts = _texts(texts)
        if not texts:
            return []
        return self.predictor.generate(texts, batch_size=batch_size, **generation)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False):
        """Sentence embeddings, float32 numpy ``(N, D)``: mean of the last hidden state over
        each text's real tokens, L2-normalised (what sentence-transformers computes; texts
        are cut to ``max_len`` tokens)."""
        from lanistr.tasks.predict import mean_pooled_embeddings

        self.require("embed")
        texts = _texts(texts)
        p = self.predictor
        return mean_pooled_embeddings(p.model, p.tokenizer, texts, self.max_len, self.device,
                                      batch_size, progress)

    def attention(self, text: str, text_pair: str | None = None, *, weights: bool = True,
                  html: bool = False, max_tokens: int | None = None) -> dict:
        """The encoder's attention on one text, the data of ``lanistr visualize``'s page:

        ``{"text", "tokens", "num_layers", "num_heads", "truncated", "backend", "prediction",
        "attentions"}``, ``attentions[layer][head][query][key]`` a float (None where the
        attention backend computed nothing); ``prediction`` is :meth:`classify`'s or
        :meth:`tag`'s answer for the text, or None. ``weights=False`` leaves out
        ``attentions``; ``html=True`` adds ``"html"``, the self-contained viewer page.
        ``max_tokens`` cuts the text shorter than ``max_len`` (the weights grow as its
        square); ``truncated`` says whether it was cut."""
        import numpy as np
        import torch

        from lanistr import viz
        from lanistr.tasks.predict import encoder_of

        self.require("attention")
        if not isinstance(text, str) or (text_pair is not None and not isinstance(text_pair, str)):
            raise LanistrError("text (and text_pair) must be strings")
        p = self.predictor
        tok = p.tokenizer
        limit = self.max_len if max_tokens is None else max(2, min(self.max_len, max_tokens))
        cut = getattr(p, "truncation", "head") if max_tokens is None else "head"  # as it reads
        batch = tok.encode(text, text_pair, max_length=limit, padding=True, truncation=cut)
        n = int(batch.attention_mask[0].sum())
        with torch.inference_mode():
            out = encoder_of(p.model)(batch.input_ids.to(self.device),
                                      batch.attention_mask.to(self.device),
                                      batch.token_type_ids.to(self.device),
                                      output_attentions=True)
        if not out.attentions:
            raise LanistrError(f"{self.model_dir}: the model returned no attention weights")
        tokens = tok.convert_ids_to_tokens(batch.input_ids[0, :n])
        layers = viz.as_layers(out.attentions, 0, n)
        prediction = None
        if self.task == "classify" and text_pair is None and not p.meta.get("text_pair_field"):
            prediction = self.classify([text])[0]
        elif self.task == "classify" and text_pair is not None:
            prediction = self.classify([text], [text_pair])[0]
        elif self.task == "tag":
            prediction = self.tag([text])[0]
        result = {"text": text, "tokens": list(tokens), "num_layers": len(layers),
                  "num_heads": layers[0].num_heads, "truncated": bool(batch.num_truncated),
                  "backend": self.config.attention.backend, "prediction": prediction}
        if text_pair is not None:
            result["text_pair"] = text_pair
        if weights:
            stacked = np.stack([la.window(0, n) for la in layers])  # (L, H, T, T), NaN: none
            if np.isnan(stacked).any():
                result["attentions"] = np.where(np.isnan(stacked), None,
                                                stacked.astype(object)).tolist()
            else:
                result["attentions"] = stacked.astype(np.float64).tolist()
        if html:
            suffix = ""
            if prediction is not None and "label" in prediction:
                suffix = f" | predicted: {prediction['label']} (p={prediction['score']:.2f})"
            title = f"{self.model_dir.resolve().name}: attention ({n} tokens){suffix}"
            notes = [f"Model {self.model_dir} ({self.config.architecture}, attention backend "
                     f"{self.config.attention.backend}, {len(layers)} layers x "
                     f"{layers[0].num_heads} heads)."]
            if batch.num_truncated:
                notes.append(f"The text was cut to its first {limit} tokens.")
            result["html"] = viz.render_html(layers, tokens, title=title, notes=notes)
        return result
