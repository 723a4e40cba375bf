"""Inference with a fine-tuned model directory: :class:`Predictor` (classify, tag, evaluate
a labelled file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lanistr.data.segments import window_starts
from lanistr.data.tokenizer import Tokenizer
from lanistr.errors import LanistrError
from lanistr.tasks.labelled import (
    document_segments,
    encode_segmented,
    encode_texts,
    label_ids,
    length_batches,
    pad_batch,
    progress_bar,
    read_labelled_texts,
    resolve_path,
)
from lanistr.tasks.run_config import read_meta


class Predictor:
    """A fine-tuned model directory, ready to classify texts or tag words (CPU by default)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", *,
                 windows: bool = False, stride: int | None = None,
                 runtime: Literal["torch", "onnx"] = "torch", overrides: dict | None = None,
                 any_encoder: bool = False):
        """``windows=True``: a text longer than the model's ``max_len`` is classified from all
        its ``max_len`` windows, ``stride`` tokens apart (default: half a window), by the mean
        of their logits, instead of from its first ``max_len`` tokens only.

        ``runtime="onnx"``: ``model_dir`` is an ONNX export (``lanistr export --format onnx``)
        or one ``.onnx`` file in it (``model.int8.onnx``), run by onnxruntime on the CPU.

        ``overrides``: fields of the model's config to change for this run (``{"attention":
        {"backend": "sliding_window"}}``), as ``--set model.KEY=VALUE`` gives them.

        ``any_encoder=True`` also accepts a checkpoint without a classifier or tagger head (a
        bare encoder, MLM, pretraining or seq2seq model): its ``kind`` is ``"encode"`` and only
        :meth:`embed` applies."""
        self.device = torch.device(device)
        if runtime == "onnx":
            from lanistr.export.onnx import OnnxRunner

            if self.device.type != "cpu":
                raise LanistrError(f"the onnx runtime runs on the CPU, not device={device}")
            if overrides:
                raise LanistrError("an ONNX export is a fixed graph: --set model.* needs the "
                                   "torch runtime (re-export after changing the model)")
            self.model = OnnxRunner.from_export(model_dir)
            self.model_dir = self.model.path.parent
        elif runtime == "torch":
            from lanistr.nn import load_model

            self.model_dir = Path(model_dir)
            self.model = load_model(self.model_dir, **(overrides or {})).to(device).eval()
        else:
            raise LanistrError(f"runtime={runtime!r}: choose torch or onnx")
        self.tokenizer = Tokenizer.from_pretrained(self.model_dir)
        self.labels = list(self.model.config.labels)
        arch = self.model.config.architecture
        kinds = {"LanistrForSequenceClassification": "classify",
                 "LanistrForDocumentClassification": "classify",
                 "LanistrForTokenClassification": "tag"}
        if arch in kinds and self.labels:
            self.kind = kinds[arch]
        elif any_encoder:  # a bare encoder, MLM, pretraining or seq2seq checkpoint: embed only
            self.kind = "encode"
        else:
            raise LanistrError(f"{self.model_dir}: not a fine-tuned classifier or tagger "
                               f"(architecture {arch}, {len(self.labels)} labels); fine-tune "
                               "it with `lanistr finetune` first")
        self.meta = read_meta(self.model_dir)
        self.max_len = int(self.meta.get("max_len") or min(self.model.config.max_len, 512))
        self.truncation = self.meta.get("truncation", "head")  # as the model was trained
        self.windows = windows
        self.stride = max(1, (self.max_len - 2) // 2) if stride is None else stride
        if windows and (self.kind != "classify" or self.model.config.long == "hierarchical"):
            raise LanistrError(f"{self.model_dir}: windows are for classifiers of single texts "
                               "up to max_len (taggers split long sentences themselves; a "
                               "hierarchical model reads whole documents already)")
        if not 1 <= self.stride <= self.max_len - 2:
            raise LanistrError(f"stride must be between 1 and max_len - 2 = {self.max_len - 2} "
                               f"tokens, got {self.stride}")

    # -- classification --------------------------------------------------------------------

    @torch.no_grad()
    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 batch_size: int = 32, progress: bool = False) -> tuple[np.ndarray, int]:
        """Class probabilities ``(N, K)`` (rows in input order) and the number of texts that
        were cut to ``max_len``."""
        if self.windows:
            if pairs is not None:
                raise LanistrError("windows classify single texts; this model reads text pairs")
            return self._classify_windows(texts, batch_size, progress), 0
        if self.model.config.long == "hierarchical":
            ids, truncated = encode_segmented(self.tokenizer, texts, self.model.config.hierarchical)
            types = None
        else:
            ids, types, truncated = encode_texts(self.tokenizer, texts, pairs, self.max_len,
                                                 truncation=self.truncation)
        probs = np.zeros((len(ids), len(self.labels)), dtype=np.float64)
        for idx in length_batches(ids, batch_size, progress=progress, desc="predict"):
            batch = pad_batch([ids[i] for i in idx], self.tokenizer.pad_id,
                              None if types is None else [types[i] for i in idx])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"],
                                batch["token_type_ids"]).logits.float()
            probs[idx] = torch.softmax(logits, -1).double().cpu().numpy()
        return probs, truncated

    def _classify_windows(self, texts: Sequence[str], batch_size: int,
                          progress: bool) -> np.ndarray:
        windows, owner = [], []
        for i, (segs, _) in enumerate(document_segments(self.tokenizer, texts, self.max_len,
                                                        self.stride)):
            windows += [np.asarray(seg, dtype=np.int32) for seg in segs]
            owner += [i] * len(segs)
        owner_t = torch.tensor(owner, dtype=torch.long)
        sums = torch.zeros(len(texts), len(self.labels), dtype=torch.float64)
        for idx in length_batches(windows, batch_size, progress=progress,
                                  desc="predict (windows)"):
            batch = pad_batch([windows[i] for i in idx], self.tokenizer.pad_id, None)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"]).logits
            sums.index_add_(0, owner_t[torch.as_tensor(idx)], logits.double().cpu())
        counts = torch.bincount(owner_t, minlength=len(texts)).clamp(min=1)
        return torch.softmax(sums / counts[:, None], -1).numpy()

    # -- tagging ---------------------------------------------------------------------------

    @torch.no_grad()
    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = 32,
            progress: bool = False) -> tuple[list[list[str]], int]:
        """A tag for every word, and the number of sentences longer than ``max_len`` (those are
        tagged in consecutive chunks of words that fit). A word the tokenizer turns into no
        token at all (e.g. only control characters) gets ``O`` if that tag exists, else the
        first label."""
        fallback = "O" if "O" in self.labels else self.labels[0]
        tags = [[fallback] * len(s) for s in sentences]
        pending = [(i, 0) for i, s in enumerate(sentences) if len(s)]
        long_sentences: set[int] = set()
        bar = progress_bar(len(pending), progress, "predict")
        while pending:
            pending.sort(key=lambda p: len(sentences[p[0]]) - p[1])
            next_round = []
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                batch = self.tokenizer.encode_words(
                    [sentences[i][offset:] for i, offset in chunk], max_length=self.max_len,
                    padding=True, truncation=True)
                inputs = {k: v.to(self.device) for k, v in batch.model_inputs().items()}
                pred = self.model(inputs["input_ids"], inputs["attention_mask"],
                                  inputs["token_type_ids"]).logits.argmax(-1).cpu().tolist()
                for row, (i, offset) in enumerate(chunk):
                    seen = -1
                    previous = None
                    for t, w in enumerate(batch.word_ids[row]):
                        if w is not None and w != previous:
                            tags[i][offset + w] = self.labels[pred[row][t]]
                            seen = max(seen, w)
                        previous = w
                    rest = offset + seen + 1
                    if seen >= 0 and rest < len(sentences[i]) and self._cut(batch, row):
                        long_sentences.add(i)
                        next_round.append((i, rest))
                    elif bar is not None:
                        bar.update(1)
            pending = next_round
        if bar is not None:
            bar.close()
        return tags, len(long_sentences)

    def _cut(self, batch, row: int) -> bool:
        return int(batch.attention_mask[row].sum()) >= self.max_len

    # -- sentence embeddings ---------------------------------------------------------------

    def embed(self, texts: Sequence[str], batch_size: int = 32,
              progress: bool = False) -> np.ndarray:
        """Sentence embeddings ``(N, D)`` float32 (see :func:`mean_pooled_embeddings`)."""
        return mean_pooled_embeddings(self.model, self.tokenizer, texts, self.max_len,
                                      self.device, batch_size, progress)

    # -- evaluation ------------------------------------------------------------------------

    def evaluate_file(self, path: str | Path, *, text_field: str | None = None,
                      text_pair_field: str | None = None, label_field: str | None = None,
                      batch_size: int = 32, progress: bool = False) -> dict:
        """Metrics of the model on a labelled file (fields default to those it was trained
        with): classification -> accuracy, macro-F1, per-class P/R/F1, confusion matrix;
        tagging -> token accuracy, per-tag scores, and entity F1 per type for BIO tags."""
        from lanistr.metrics import classification_scores, tagging_scores

        if self.kind == "tag":
            from lanistr.data.readers import read_conll

            sentences = read_conll(resolve_path(path))
            for s in sentences:  # unknown tags are an error, as in training
                label_ids(s.tags, self.labels, path, [s.line + k for k in range(len(s))])
            pred, long = self.tag([s.words for s in sentences], batch_size, progress)
            out = tagging_scores([s.tags for s in sentences], pred, self.labels)
            out["long_sentences"] = long
        else:
            text_field = text_field or self.meta.get("text_field", "text")
            pair_field = text_pair_field or self.meta.get("text_pair_field")
            label_field = label_field or self.meta.get("label_field", "label")
            texts, pairs, labels, lines = read_labelled_texts(path, text_field, label_field,
                                                              pair_field)
            y = label_ids(labels, self.labels, path, lines)
            probs, truncated = self.classify(texts, pairs, batch_size, progress)
            out = classification_scores(y, probs.argmax(1), self.labels)
            p_true = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
            out["loss"] = float(-np.log(p_true).mean())
            out["truncated"] = truncated
            if self.windows:
                out["windows"] = {"max_len": self.max_len, "stride": self.stride}
        out = {"task": self.kind, "data": str(path), "model": str(self.model_dir), **out}
        return out


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The bare encoder (:class:`~lanistr.nn.models.LanistrModel`) inside any lanistr model
    (every head model keeps it as ``.model``), or the model itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else model


@torch.no_grad()
def mean_pooled_embeddings(model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str],
                           max_len: int, device: str | torch.device = "cpu",
                           batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Sentence embeddings as sentence-transformers computes them: the encoder's last hidden
    state averaged over the real tokens (attention mask) of each text (cut to ``max_len``),
    then L2-normalised. ``(N, D)`` float32, rows in input order."""
    encoder = encoder_of(model)
    ids, _, _ = encode_texts(tokenizer, texts, None, max_len)
    out = np.zeros((len(ids), encoder.config.hidden_size), dtype=np.float32)
    for idx in length_batches(ids, batch_size, progress=progress, desc="embed"):
        batch = {k: v.to(device) for k, v in
                 pad_batch([ids[i] for i in idx], tokenizer.pad_id).items()}
        h = encoder(batch["input_ids"], batch["attention_mask"],
                    batch["token_type_ids"]).last_hidden_state
        if h is None:  # an ONNX export of a classifier or tagger: logits only
            raise LanistrError("embeddings need the encoder's hidden states, which this model "
                               "does not return (an ONNX export of a model with a head); use "
                               "runtime torch, or export the bare encoder")
        h = h.float()  # (B, T, D)
        m = batch["attention_mask"].to(h.dtype)[..., None]  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
    return out


@torch.no_grad()
def sliding_window_logits(model, ids: list[int], max_len: int, stride: int, cls_id: int,
                          sep_id: int) -> torch.Tensor:
    """Token-tagging logits (N, L) for a sequence of N word pieces longer than ``max_len``:
    windows of ``max_len - 2`` pieces, ``stride`` apart; each piece takes its logits from the
    window where it is farthest from an edge (most context on both sides)."""
    body = max_len - 2
    best = torch.full((len(ids),), -1, dtype=torch.long)
    out = None
    for start in window_starts(len(ids), body, stride):
        piece = ids[start:start + body]
        window = torch.tensor([[cls_id, *piece, sep_id]])
        logits = model(window).logits[0, 1:-1]  # (len(piece), L)
        if out is None:
            out = logits.new_zeros(len(ids), logits.shape[-1])
        pos = torch.arange(len(piece))
        margin = torch.minimum(pos, len(piece) - 1 - pos)
        idx = start + pos
        better = margin > best[idx]
        out[idx[better]] = logits[better]
        best[idx[better]] = margin[better]
    return out
