"""Evaluation metrics, pure numpy: classification (accuracy, macro-F1, per-class P/R/F1,
confusion matrix) and sequence tagging (token accuracy, BIO entity F1 per type).

The numbers equal scikit-learn's (``accuracy_score``, ``f1_score(average="macro")``,
``precision_recall_fscore_support`` with ``zero_division=0``) and seqeval's (default
``conlleval`` mode); ``tests/test_finetune.py`` checks both. Everything is computed from
counts that add up over batches and ranks (a confusion matrix, entity tp/pred/gold counts),
so the training loop can sum them before finalising.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# --------------------------------------------------------------------------- classification


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    """``(K, K)`` int64 counts: row = true label, column = predicted label."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} items but y_pred has {p.size}")
    cm = np.bincount(t * num_labels + p, minlength=num_labels * num_labels)
    return cm.reshape(num_labels, num_labels)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with 0 where b == 0 (scikit-learn's zero_division=0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.zeros(np.broadcast(a, b).shape)
    np.divide(a, b, out=out, where=b != 0)
    return out


def scores_from_confusion(cm: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix.

    Macro-F1 averages over the labels that occur in the gold or the predicted labels (as
    scikit-learn does when no ``labels=`` is given); ``per_class`` lists every label.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * tp, support + predicted)
    present = (support + predicted) > 0
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "examples": int(total),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
    }


def classification_scores(y_true: Sequence[int], y_pred: Sequence[int],
                          labels: Sequence[str]) -> dict:
    """:func:`scores_from_confusion` of label ids, plus the confusion matrix as a list."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    out = scores_from_confusion(cm, labels)
    out["labels"] = list(labels)
    out["confusion_matrix"] = cm.tolist()
    return out


# --------------------------------------------------------------------------- tagging


def is_bio(labels: Sequence[str]) -> bool:
    """True when the tag set is a BIO/IOBES entity scheme (``O`` and ``B-X``/``I-X``...)."""
    prefixed = [t for t in labels if t != "O"]
    return bool(prefixed) and all(t[:2] in ("B-", "I-", "E-", "S-") and len(t) > 2
                                  for t in prefixed)


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, start, end)`` entity chunks of one tag sequence (end inclusive), as seqeval's
    ``get_entities`` (conlleval rules: an ``I-X`` after ``O`` or another type starts a chunk)."""
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, tag_str in enumerate([*tags, "O"]):
        tag = tag_str[0]
        type_ = tag_str[1:].split("-", maxsplit=1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _chunk_starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                  ) -> dict[str, np.ndarray]:
    """Per entity type ``[true positives, predicted, gold]`` over sentences (summable)."""
    counts: dict[str, np.ndarray] = {}
    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
        gs, ps = set(entity_spans(g)), set(entity_spans(p))
        for kind, spans in ((1, ps), (2, gs)):
            for span in spans:
                counts.setdefault(span[0], np.zeros(3, dtype=np.int64))[kind] += 1
        for span in gs & ps:
            counts[span[0]][0] += 1
    return counts


def entity_scores(counts: dict[str, np.ndarray]) -> dict:
    """Micro entity precision/recall/F1 and per-type scores from :func:`entity_counts`."""
    total = sum(counts.values(), np.zeros(3, dtype=np.int64))

    def prf(c):
        p, r = _div(c[0], c[1]), _div(c[0], c[2])
        return {"precision": float(p), "recall": float(r), "f1": float(_div(2 * c[0], c[1] + c[2])),
                "support": int(c[2])}

    micro = prf(total)
    return {"entity_precision": micro["precision"], "entity_recall": micro["recall"],
            "entity_f1": micro["f1"],
            "per_type": {name: prf(counts[name]) for name in sorted(counts)}}


def tagging_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                   labels: Sequence[str]) -> dict:
    """Token accuracy (+ per-tag P/R/F1), and entity F1 per type when the tags are BIO."""
    index = {t: i for i, t in enumerate(labels)}
    flat_g = [index[t] for s in gold for t in s]
    flat_p = [index[t] for s in pred for t in s]
    tokens = classification_scores(flat_g, flat_p, labels)
    out = {"token_accuracy": tokens["accuracy"], "tokens": tokens["examples"],
           "sentences": len(gold), "tag_macro_f1": tokens["macro_f1"],
           "per_tag": tokens["per_class"], "labels": list(labels)}
    if is_bio(labels):
        out.update(entity_scores(entity_counts(gold, pred)))
    return out
