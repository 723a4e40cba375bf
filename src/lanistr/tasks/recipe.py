"""The default fine-tuning recipe: settings chosen from the data where the config is silent.

``lanistr finetune --set init=MODEL --set data.train=TRAIN --set data.test=TEST`` and nothing
else should give a strong classifier or tagger on data nobody here has seen. :func:`choose`
is a pure function of a few statistics of the training data (:class:`DataStats`) and of the
settings the user gave: it returns the settings it picks, each with one line saying why.
Anything the user set explicitly wins (it is never chosen over). :func:`apply` measures the
statistics, prints the choices at the start of the run and writes them into the run config
(the chosen values in their sections, and ``finetune.chosen`` with the reasons), so
``run_config.yaml`` records them. ``finetune.recipe: off`` turns it off.

The rules were fixed before measuring on any test set (see ``benchmarks/time_to_accuracy.py``
and ``benchmarks/results/classification_quality.md``); no rule names a dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: learning rate of a small pretrained encoder (hidden <= 512) whose lower two thirds are
#: frozen. Measured on 2,000 20 Newsgroups training posts (1,000 held out, 128 tokens, 2
#: epochs), held-out accuracy: lower half frozen lr 1e-4 0.777 (180 s), 2e-4 0.809, 4e-4 0.829;
#: lower two thirds frozen lr 1e-4 0.767, 4e-4 0.829 (123 s). Reuters-R8 the same way: lower
#: half, 1e-4: 0.959 accuracy / 0.918 macro-F1 (129 s); lower two thirds, 4e-4: 0.962 / 0.906 (91 s)
SMALL_LR = 4e-4
#: the longest inputs the recipe picks on its own (cost grows with length; measured: 256
#: tokens keep 20 Newsgroups' accuracy within reach at a quarter of 512's cost) ...
MAX_LEN_CAP = 256
#: ... where an epoch at that length stays under EPOCH_TOKENS tokens; larger sets are cut at
#: SHORT_CAP (measured on 2,000 20 Newsgroups training posts, 1,000 held out: 256 tokens
#: 0.781 held-out accuracy in 408 s, 128 tokens 0.777 in 180 s)
SHORT_CAP = 128
EPOCH_TOKENS = 1_000_000
#: sampled examples for the token-length distribution
LENGTH_SAMPLE = 2000
#: the share of cut texts from which a classifier keeps their head and tail
HEAD_TAIL_AT = 0.10
#: ... at this max_len or more (its head quarter is then >= 63 tokens). Measured on 2,000 20
#: Newsgroups training posts, 1,000 held out, 2 epochs: at 256 tokens head+tail 0.788 vs head
#: 0.781 held-out accuracy; at 128 (a 31-token head) 0.764 vs 0.777
HEAD_TAIL_MIN_LEN = 256
#: pretrained encoders with at least this many layers have their lower two thirds frozen;
#: shallower ones train every layer (a step through them is cheap, and with only one or two
#: layers free too little of the model adapts). Measured on held-out training data (seed 0,
#: 3 epochs): a 4-layer model pretrained for 60 min with ``lanistr pretrain``, lower 2
#: frozen vs none frozen: Reuters-R8 0.927 vs 0.969 accuracy (macro-F1 0.843 vs 0.897),
#: SpamAssassin 0.979 vs 0.982. MiniLM-L6 (6 layers): see SMALL_LR
FREEZE_MIN_LAYERS = 6
#: dropout while fine-tuning an encoder pretrained without it. The same 4-layer model, every
#: layer trained, held-out: SpamAssassin 0.994 accuracy with dropout 0.1 vs 0.982 without,
#: Reuters-R8 0.971 (macro-F1 0.911) vs 0.969 (0.897)
FINETUNE_DROPOUT = 0.1


@dataclass
class DataStats:
    """What the recipe looks at: the training data and the starting model."""

    task: str  # classify | tag
    num_examples: int
    label_counts: dict[str, int]
    token_lengths: list[int]  # per sampled example, with [CLS]/[SEP], capped at model_max_len
    from_scratch: bool
    hidden_size: int
    num_layers: int
    model_max_len: int
    dropout: float = 0.1  # the starting model's (hidden) dropout
    has_eval: bool = False  # data.eval given (held-out data of the user's own)
    pairs: bool = False  # text pairs (cut longest-first, not head+tail)

    @property
    def imbalance(self) -> float:
        counts = [c for c in self.label_counts.values() if c > 0]
        return max(counts) / min(counts) if counts else 1.0

    def length_quantile(self, q: float) -> int:
        return int(np.quantile(self.token_lengths, q)) if self.token_lengths else 0


@dataclass
class Choice:
    key: str  # dotted config key, e.g. "train.lr"
    value: object
    why: str

    def line(self) -> str:
        return f"{self.key}={self.value}: {self.why}"


@dataclass
class Recipe:
    choices: list[Choice] = field(default_factory=list)

    def set(self, key: str, value, why: str) -> None:
        self.choices.append(Choice(key, value, why))

    def lines(self) -> list[str]:
        return [c.line() for c in self.choices]


def _given(raw: dict, key: str) -> bool:
    section, _, name = key.partition(".")
    value = raw.get(section)
    return isinstance(value, dict) and name in value


def choose(stats: DataStats, raw: dict) -> Recipe:
    """The settings the default recipe picks for ``stats`` where ``raw`` (the user's run
    config: sections task, init, model, data, finetune, train) says nothing."""
    r = Recipe()

    def pick(key: str, value, why: str) -> None:
        if not _given(raw, key):
            r.set(key, value, why)

    n = stats.num_examples
    # -- model selection on held-out TRAINING data (never the test set)
    no_eval = (raw.get("train") or {}).get("eval_every") == 0  # the user turned evaluation off
    if not stats.has_eval and not no_eval:
        if n >= 1000:
            frac = round(min(0.1, 2000 / n), 3)
            pick("data.eval_fraction", frac,
                 f"{n} training examples: hold out {frac:g} of them ({int(round(frac * n))}) to "
                 "keep the best epoch (model selection on training data, never the test set)")
        elif n >= 200:
            pick("data.eval_fraction", 0.15,
                 f"{n} training examples: hold out 15% to keep the best epoch")
        else:
            pick("data.eval_fraction", 0.0,
                 f"only {n} training examples: all of them train (no held-out selection)")

    # -- learning rate: small pretrained encoders take a larger step than BERT-base
    if stats.from_scratch:
        pick("train.lr", 5e-4, "from scratch: every weight is new")
    elif stats.hidden_size <= 512:
        pick("train.lr", SMALL_LR, f"pretrained encoder with hidden size {stats.hidden_size} "
             "<= 512: its trained layers and the new head take a large step (BERT-base "
             "sizes: 3e-5)")
    else:
        pick("train.lr", 3e-5, f"pretrained encoder with hidden size {stats.hidden_size} > 512")

    # -- epochs: small sets need more passes; the best epoch is kept on held-out data
    epochs = 5 if n < 2000 else 3 if n < 20000 else 2
    pick("train.epochs", epochs, f"{n} training examples (<2,000: 5 epochs, <20,000: 3, "
         "else 2; the best epoch on held-out data is kept)")
    pick("train.warmup_ratio", 0.1, "linear warm-up over the first 10% of steps, then linear decay")

    # -- input length from the token-length distribution
    if stats.token_lengths:
        p90 = stats.length_quantile(0.9)
        cap = min(MAX_LEN_CAP if n * MAX_LEN_CAP <= EPOCH_TOKENS else SHORT_CAP,
                  stats.model_max_len)
        max_len = int(min(cap, max(64, 32 * math.ceil(p90 / 32))))

        def cut_share(limit: int) -> float:
            return float(np.mean(np.asarray(stats.token_lengths) > limit))

        longer = cut_share(max_len)
        more = " or more" if p90 >= stats.model_max_len else ""
        pick("data.max_len", max_len,
             f"the 90th percentile of the sampled training texts' lengths is {p90}{more} "
             f"tokens (rounded up to a multiple of 32, within 64..{cap}"
             + ("" if cap >= MAX_LEN_CAP or cap == stats.model_max_len else
                f": {n} x {MAX_LEN_CAP} tokens an epoch would pass {EPOCH_TOKENS:,}")
             + f"); {longer:.0%} of them are longer and are cut")
        given = (raw.get("data") or {}).get("max_len")  # the user's max_len wins: judge by it
        used = max_len if given is None else int(given)
        if (stats.task == "classify" and cut_share(used) >= HEAD_TAIL_AT and not stats.pairs
                and used >= HEAD_TAIL_MIN_LEN):
            pick("data.truncation", "head_tail",
                 f"{cut_share(used):.0%} of the texts are cut (>= {HEAD_TAIL_AT:.0%}): keep their first "
                 "quarter and last three quarters of max_len (the end of a long text often "
                 "says as much as its start)")

    # -- dropout back on for fine-tuning a model pretrained without it (as cramming does)
    if not stats.from_scratch and stats.dropout == 0:
        pick("model.dropout", FINETUNE_DROPOUT, "the encoder was pretrained without dropout "
             "(lanistr pretrain's default); fine-tuning turns it back on against "
             "overfitting a small labelled set")

    # -- frozen lower layers, computed once (lanistr.tasks.frozen_cache)
    if not stats.from_scratch and stats.num_layers >= FREEZE_MIN_LAYERS:
        k = (2 * stats.num_layers) // 3
        pick("finetune.freeze_layers", k,
             f"pretrained encoder with {stats.num_layers} layers: the embeddings and the lower "
             f"{k} stay frozen, their output is computed once per example and cached, so every "
             f"step runs only the top {stats.num_layers - k}")

    # -- the new head fitted to the pretrained features first (lanistr.tasks.head_probe).
    # the head warm-up (LP-FT, finetune.head_init: probe) for a pretrained encoder. Measured on
    # 2,000 training examples, 1,000 other training examples held out, 2 epochs, seeds 0 and 1
    # (benchmarks/head_warmup.py; rule set before the first result: adopt at a mean of >= +0.3
    # points with 20 Newsgroups not losing): held-out accuracy vs a random head 20 Newsgroups
    # +2.1/+2.6, Reuters-R8 +0.6/+0.3, SpamAssassin +0.1/-0.4, Brown +0.3/+0.2; mean +0.73.
    # On the whole test sets after adoption (3 seeds, classification_quality.md against
    # classification_quality_random_head.md) much less: 20 Newsgroups +0.9, SpamAssassin -0.7,
    # Reuters-R8 0.0, Brown 0.0
    if not stats.from_scratch:
        pick("finetune.head_init", "probe",
             "a pretrained encoder: its new head is first fitted to the encoder's features (a "
             "logistic regression, seconds), then everything fine-tunes from there (LP-FT)")

    if stats.task == "classify":
        if not (_given(raw, "model.pooling") or _given(raw, "model.use_pooler")):
            r.set("model.pooling", "mean", "classify from the mean of all token states "
                  "(a new head learns faster from it than from [CLS] alone)")
            r.set("model.use_pooler", False, "the BERT pooler reads only [CLS]; off for mean pooling")
        if stats.imbalance >= 3:
            pick("finetune.class_weights", "balanced",
                 f"labels are imbalanced (largest/smallest class = {stats.imbalance:.1f} >= 3): "
                 "each class weighs the same in the loss")
        else:
            pick("finetune.class_weights", "none",
                 f"labels are roughly balanced (largest/smallest class = {stats.imbalance:.1f} < 3)")
    return r


# --------------------------------------------------------------------------- measuring, applying


def measure(raw: dict) -> DataStats | None:
    """The statistics of a raw run config's training data (None where the recipe does not
    apply: no training file, an unknown task, a missing tokenizer)."""
    from lanistr.checkpoint import read_config
    from lanistr.data.tokenizer import Tokenizer

    task = raw.get("task", "classify")
    data = raw.get("data") or {}
    init = raw.get("init")
    train = data.get("train")
    if task not in ("classify", "tag") or not train or not isinstance(init, str):
        return None
    files = [train] if isinstance(train, str) else list(train)
    scratch = init == "scratch"
    tok_dir = data.get("tokenizer") or (None if scratch else init)
    if tok_dir is None:
        return None
    tokenizer = Tokenizer.from_pretrained(Path(tok_dir).expanduser())
    if scratch:
        from lanistr.config import LanistrConfig

        cfg = LanistrConfig.from_any({"preset": "mini", "vocab_size": tokenizer.vocab_size,
                                      **{k: v for k, v in (raw.get("model") or {}).items()
                                         if k != "labels"}})
    else:
        cfg = read_config(Path(init).expanduser())
    rng = np.random.default_rng(0)
    if task == "classify":
        from lanistr.tasks.labelled import read_labelled_texts

        texts, pairs, labels = [], [], []
        for f in files:
            t, p, y, _ = read_labelled_texts(f, data.get("text_field", "text"),
                                             data.get("label_field", "label"),
                                             data.get("text_pair_field"))
            texts += t
            pairs += p or []
            labels += y
        pick = sorted(rng.permutation(len(texts))[:LENGTH_SAMPLE].tolist())
        batch = tokenizer.encode([texts[i] for i in pick],
                                 [pairs[i] for i in pick] if pairs else None,
                                 max_length=cfg.max_len, padding=True, truncation=True)
        lengths = batch.attention_mask.sum(1).tolist()
        n = len(texts)
    else:
        from lanistr.data.readers import read_conll

        sents = [s for f in files for s in read_conll(Path(f).expanduser())]
        labels = [t for s in sents for t in s.tags]
        pick = sorted(rng.permutation(len(sents))[:LENGTH_SAMPLE].tolist())
        batch = tokenizer.encode_words([sents[i].words for i in pick], max_length=cfg.max_len,
                                       padding=True, truncation=True)
        lengths = batch.attention_mask.sum(1).tolist()
        n = len(sents)
    counts: dict[str, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    return DataStats(task, n, counts, [int(x) for x in lengths], scratch, cfg.hidden_size,
                     cfg.num_layers, cfg.max_len, dropout=cfg.dropout,
                     has_eval=bool(data.get("eval")),
                     pairs=task == "classify" and bool(data.get("text_pair_field")))


def apply(raw: dict, printer=print) -> dict:
    """``raw`` with the recipe's choices filled in (a new dict) and ``finetune.chosen``
    recording them; the choices are printed (one line each) on the main process."""
    options = raw.get("finetune") or {}
    if options.get("recipe", "auto") == "off" or raw.get("task", "classify") == "seq2seq":
        return raw
    from lanistr.tasks.run_config import parse_run

    parse_run("finetune", raw)  # the config's own errors first, named as usual
    stats = measure(raw)
    if stats is None:
        return raw
    recipe = choose(stats, raw)
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for c in recipe.choices:
        section, _, name = c.key.partition(".")
        out.setdefault(section, {})[name] = c.value
    out.setdefault("finetune", {})["chosen"] = {c.key: f"{c.value} ({c.why})"
                                                for c in recipe.choices}
    if os.environ.get("RANK", "0") == "0" and recipe.choices:
        printer(f"default recipe ({stats.num_examples} training examples, "
                f"{len(stats.label_counts)} labels, median {stats.length_quantile(0.5)} tokens; "
                "settings you give win):")
        for line in recipe.lines():
            printer(f"  {line}")
    return out
