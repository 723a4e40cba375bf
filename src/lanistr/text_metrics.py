"""Text generation metrics: corpus BLEU (sacrebleu-compatible), exact match, token F1.

BLEU follows sacrebleu's defaults exactly (``13a`` tokenisation, case-sensitive, n-grams up
to 4, ``exp`` smoothing, brevity penalty from the summed lengths, one reference per
segment); ``tests/test_seq2seq.py`` checks the numbers against sacrebleu. Everything is
computed from *sufficient statistics* that add up over batches and ranks:
:func:`bleu_stats` of one segment is ``[hyp_len, ref_len, correct_1..4, total_1..4]``, and
:func:`bleu_from_stats` turns their sum into the score, so the training loop can sum them.

Exact match and token F1 compare whitespace tokens as they are (case and punctuation count:
``Congress,`` is not ``congress``), which is what restoration tasks need; token F1 is the
multiset overlap F1 of one segment (SQuAD-style, without SQuAD's normalisation), averaged.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

MAX_ORDER = 4

_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a tokenisation, as sacrebleu's default ``13a`` tokenizer."""
    line = line.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                .replace("&gt;", ">"))
    line = f" {line} "
    for pattern, repl in _13A:
        line = pattern.sub(repl, line)
    return line.split()


def _ngrams(tokens: list[str]) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, MAX_ORDER + 1)
                   for i in range(len(tokens) - n + 1))


def bleu_stats(hypothesis: str, reference: str) -> list[int]:
    """``[hyp_len, ref_len, correct_1..4, total_1..4]`` of one segment."""
    hyp, ref = tokenize_13a(hypothesis), tokenize_13a(reference)
    hyp_ngrams, ref_ngrams = _ngrams(hyp), _ngrams(ref)
    correct = [0] * MAX_ORDER
    total = [0] * MAX_ORDER
    for gram, count in hyp_ngrams.items():
        total[len(gram) - 1] += count
        correct[len(gram) - 1] += min(count, ref_ngrams.get(gram, 0))
    return [len(hyp), len(ref), *correct, *total]


def bleu_from_stats(stats: Sequence[float]) -> float:
    """Corpus BLEU (0-100) from summed :func:`bleu_stats`, with sacrebleu's exp smoothing."""
    sys_len, ref_len = stats[0], stats[1]
    correct = list(stats[2:2 + MAX_ORDER])
    total = list(stats[2 + MAX_ORDER:2 + 2 * MAX_ORDER])
    if not any(correct):
        return 0.0
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * MAX_ORDER
    smooth = 1.0
    for n in range(MAX_ORDER):
        if total[n] == 0:
            break
        if correct[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    logs = [math.log(p) if p > 0 else -9999999999 for p in precisions]
    return bp * math.exp(sum(logs) / MAX_ORDER)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's ``corpus_bleu(hypotheses, [references]).score``."""
    _same_length(hypotheses, references)
    stats = [0] * (2 + 2 * MAX_ORDER)
    for h, r in zip(hypotheses, references):
        stats = [a + b for a, b in zip(stats, bleu_stats(h, r))]
    return bleu_from_stats(stats)


def exact_match(hypothesis: str, reference: str) -> float:
    """1.0 if the texts are equal up to whitespace, else 0.0."""
    return float(hypothesis.split() == reference.split())


def token_f1(hypothesis: str, reference: str) -> float:
    """F1 of the multiset overlap of whitespace tokens (case and punctuation sensitive)."""
    hyp, ref = hypothesis.split(), reference.split()
    if not hyp or not ref:
        return float(hyp == ref)
    common = sum((Counter(hyp) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def generation_stats(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Summable statistics: ``exact``, ``f1`` (sums), ``count`` and ``bleu_0..9``."""
    _same_length(hypotheses, references)
    out = {"exact": 0.0, "f1": 0.0, "count": float(len(hypotheses))}
    bleu = [0] * (2 + 2 * MAX_ORDER)
    for h, r in zip(hypotheses, references):
        out["exact"] += exact_match(h, r)
        out["f1"] += token_f1(h, r)
        bleu = [a + b for a, b in zip(bleu, bleu_stats(h, r))]
    out.update({f"bleu_{i}": float(v) for i, v in enumerate(bleu)})
    return out


def finalize_generation(stats: dict[str, float]) -> dict[str, float]:
    """Exact match and token F1 (fractions) and BLEU (0-100) from summed statistics."""
    n = max(float(stats["count"]), 1.0)
    bleu = [float(stats[f"bleu_{i}"]) for i in range(2 + 2 * MAX_ORDER)]
    return {"exact_match": float(stats["exact"]) / n, "token_f1": float(stats["f1"]) / n,
            "bleu": bleu_from_stats(bleu)}


def generation_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact match, token F1 and corpus BLEU of hypotheses against one reference each."""
    return finalize_generation(generation_stats(hypotheses, references))


def _same_length(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
