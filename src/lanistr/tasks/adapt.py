"""Transfer learning and domain adaptation on the shared training loop.

* **DAPT** (:func:`dapt`): continued MLM pretraining of an existing checkpoint on text of
  the new domain; it *is* :func:`lanistr.tasks.pretrain.pretrain` started from that
  checkpoint (so it resumes exactly like pretraining). With ``adapt.extend_vocab: N`` the N
  most frequent domain words missing from the vocabulary are added first
  (:func:`frequent_new_words`, :func:`extend_vocabulary`): each new embedding row (and MLM
  output bias) is the mean of those of the word's old word pieces.
* **Domain probe** (:func:`domain_probe`): how well a linear domain head on frozen,
  mean-pooled features tells two corpora apart (held-out accuracy, and the proxy
  A-distance ``2 (1 - 2 err)`` of Ben-David et al.); a measure of domain shift.
* **DANN** (:func:`dann`): the fine-tuning task (``classify`` or ``tag``, from
  :mod:`lanistr.tasks.finetune`) on labelled source data, plus a domain head behind a
  gradient-reversal layer trained on source + unlabelled target examples
  (:class:`DomainAdversarialTask`). The reversal weight follows
  ``max_lambda * (2 / (1 + exp(-gamma p)) - 1)``, ``p`` = step / total steps. Freezing and
  layer-wise learning-rate decay are fine-tuning's (``finetune`` section); gradual
  unfreezing (:class:`GradualUnfreezing`) is added here.

Schedules that depend on the step (reversal weight, unfreezing) are set in
:meth:`Task.on_step`, a pure function of the step, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanistr.config import TrainConfig
from lanistr.data.tokenizer import Tokenizer
from lanistr.errors import ConfigError, DataError
from lanistr.io import atomic_path, write_json
from lanistr.tasks.finetune import TASKS, Setup
from lanistr.tasks.labelled import (
    IGNORE,
    Encoded,
    concat_encoded,
    encode_texts,
    length_batches,
    pad_batch,
    read_labelled_texts,
)
from lanistr.tasks.objectives import FinetuneTask
from lanistr.tasks.param_groups import freeze, layer_depth
from lanistr.tasks.run_config import DannOptions, DannRun, DaptRun, FinetuneDataConfig, parse_run
from lanistr.tasks.task import Task
from lanistr.tasks.trainer import GlobalOrder

log = logging.getLogger("lanistr")


def _path(path) -> Path:
    return Path(path).expanduser()


# =========================================================================== DAPT


def frequent_new_words(files: Sequence[str | Path], tokenizer: Tokenizer, n: int,
                       min_count: int = 2) -> list[tuple[str, int]]:
    """The ``n`` most frequent words of ``files`` (normalised and split exactly as the
    tokenizer does) that are not a single vocabulary entry, with their counts; ties are
    broken alphabetically. Words without a letter or digit, single characters and words
    with an ``[UNK]`` piece are skipped."""
    from lanistr.data.tokenizer import read_corpus

    backend = tokenizer.backend
    counts: Counter[str] = Counter()
    for text in read_corpus([_path(f) for f in files]):
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    out = []
    for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(out) == n or count < min_count:
            break
        if (len(word) < 2 or not any(c.isalnum() for c in word)
                or backend.token_to_id(word) is not None):
            continue
        if tokenizer.unk_id in tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)):
            continue
        out.append((word, count))
    return out


def extend_tokenizer(tokenizer: Tokenizer, words: Sequence[str]) -> Tokenizer:
    """A copy of ``tokenizer`` with ``words`` appended to the WordPiece vocabulary (ids
    ``vocab_size``, ``vocab_size + 1``, ...); normalisation and splitting are unchanged."""
    from tokenizers import Tokenizer as Backend

    data = json.loads(tokenizer.backend.to_str())
    vocab = data["model"].get("vocab")
    if data["model"].get("type") != "WordPiece" or not isinstance(vocab, dict):
        raise ConfigError(f"{tokenizer.source}: vocabulary extension needs a WordPiece tokenizer")
    base = tokenizer.vocab_size
    for i, word in enumerate(words):
        if word in vocab:
            raise ConfigError(f"cannot add {word!r}: it is already in the vocabulary")
        vocab[word] = base + i
    return Tokenizer(Backend.from_str(json.dumps(data)), source=f"{tokenizer.source} (+{len(words)})")


def extend_vocabulary(model, tokenizer: Tokenizer, words: Sequence[str]):
    """``(model, tokenizer)`` with ``words`` added to the vocabulary. The new embedding row
    of a word is the mean of the rows of the pieces the old tokenizer split it into; for a
    model with an MLM head the output bias is initialised the same way. Rows the old
    tokenizer never produced (a model vocabulary padded beyond the tokenizer's) are reused
    before the embedding grows."""
    pieces = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w)) for w in words]
    for word, ids in zip(words, pieces):
        if not ids:
            raise ConfigError(f"cannot add {word!r}: the tokenizer turns it into no tokens")
    new_tok = extend_tokenizer(tokenizer, words)
    old_size = model.config.vocab_size
    size = max(old_size, new_tok.vocab_size)
    embedding = model.model.token_embedding.weight
    emb_name = next(n for n, p in model.named_parameters() if p is embedding)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bias_name = "mlm_head.bias" if "mlm_head.bias" in state else None
    grown = {emb_name: state[emb_name]} | ({bias_name: state[bias_name]} if bias_name else {})
    for name, tensor in grown.items():
        if size > old_size:
            extra = tensor.new_zeros((size - old_size, *tensor.shape[1:]))
            tensor = torch.cat([tensor, extra])
        for i, ids in enumerate(pieces):
            tensor[tokenizer.vocab_size + i] = tensor[ids].mean(0)
        state[name] = tensor
    config = dataclasses.replace(model.config, vocab_size=size)
    new_model = type(model)(config)
    new_model.load_state_dict(state)
    return new_model, new_tok


def prepare_extended_init(init: str | Path, files: Sequence[str], n: int, min_count: int,
                          out: Path) -> Path:
    """Write the checkpoint ``init`` with ``n`` domain words added (model + tokenizer +
    ``added_words.json``) to ``out`` and return ``out``."""
    from lanistr.nn import LanistrForMaskedLM

    tokenizer = Tokenizer.from_pretrained(init)
    model = LanistrForMaskedLM.from_pretrained(init)
    found = frequent_new_words(files, tokenizer, n, min_count)
    if len(found) < n:
        log.warning("only %d domain words occur >= %d times and are not in the vocabulary "
                    "(asked for %d)", len(found), min_count, n)
    words = [w for w, _ in found]
    model, tokenizer = extend_vocabulary(model, tokenizer, words)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "added_words.json", [
            {"word": w, "count": c, "id": tokenizer.convert_tokens_to_ids(w)} for w, c in found])
    log.info("vocabulary extended by %d words (%s%s) -> %s", len(words), ", ".join(words[:8]),
             ", ..." if len(words) > 8 else "", out)
    return out


def dapt(run: DaptRun | dict, output_dir: str | Path, resume: bool = False):
    """Domain-adaptive pretraining: MLM on ``data.train`` starting from checkpoint ``init``
    (sections init, data, train, adapt). The same steps as
    :func:`lanistr.tasks.pretrain.pretrain` (so it resumes the same way), with the optional
    vocabulary extension first, written by rank 0 to ``output_dir/init``. Returns the
    runner's ``RunResult``."""
    from lanistr.tasks.pretrain import build_mlm_model, build_mlm_task, prepare_tokenizer
    from lanistr.tasks.runner import run_training, start

    if isinstance(run, dict):
        run = parse_run("dapt", run)
    output_dir = Path(output_dir)
    init, train, data, options = run.init, run.train, run.data, run.adapt
    ctx = start(train, output_dir)
    if options.unfreeze_every and ctx.enabled:
        raise ConfigError("adapt.unfreeze_every: gradual unfreezing is not supported under "
                          "torchrun (DDP fixes the trainable parameters when it starts)")
    start_dir = init
    if options.extend_vocab:
        start_dir = str(output_dir / "init")
        if ctx.is_main and not (resume and (output_dir / "init" / "config.json").is_file()):
            prepare_extended_init(init, data.train, options.extend_vocab,
                                  options.min_word_count, output_dir / "init")
        ctx.barrier()
    tokenizer = prepare_tokenizer(data, output_dir, ctx, start_dir)
    torch.manual_seed(train.seed)
    model = build_mlm_model({}, tokenizer, data, start_dir)
    task = build_mlm_task(data, tokenizer, output_dir, ctx, train.seed, train.batch_size,
                          train.progress)
    if options.unfreeze_every:
        task.unfreezing = GradualUnfreezing(model, options.unfreeze_every)
    if ctx.is_main:
        log.info("domain-adaptive pretraining of %s: %s, %.2fM parameters, vocabulary %d",
                 init, type(model).__name__, model.num_parameters() / 1e6, tokenizer.vocab_size)
    return run_training(model, task, train, output_dir, ctx, resume=resume,
                        run_config=run.to_dict())


# =========================================================================== domain probe


def read_domain_texts(path: str | Path, text_field: str = "text") -> list[str]:
    """Texts of a file, whatever its kind: the ``text_field`` of JSONL/CSV/TSV records,
    the sentences of a CoNLL file (words joined by spaces), documents of a ``.txt`` file."""
    from lanistr.data.readers import read_conll, read_documents

    path = _path(path)
    suffix = path.suffix.lower()
    if suffix in (".conll", ".conllu", ".bio"):
        return [" ".join(s.words) for s in read_conll(path)]
    if suffix in (".jsonl", ".csv", ".tsv"):
        return read_labelled_texts(path, text_field, None)[0]
    return [d.text for d in read_documents(path) if d.text.strip()]


@torch.no_grad()
def pooled_features(encoder: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], max_len: int,
                    batch_size: int = 32) -> torch.Tensor:
    """``(N, D)`` pooled vectors of ``texts`` from a bare encoder (``LanistrModel``), in input
    order, computed in length-sorted batches in eval mode."""

    ids, _, _ = encode_texts(tokenizer, texts, None, max_len)
    was_training = encoder.training
    encoder.eval()
    out = torch.zeros(len(ids), encoder.config.hidden_size)
    for idx in length_batches(ids, batch_size):
        batch = pad_batch([ids[j] for j in idx], tokenizer.pad_id)
        out[idx] = encoder(batch["input_ids"], batch["attention_mask"]).pooled.float()
    encoder.train(was_training)
    return out


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 1e-3,
                            max_iter: int = 50) -> tuple[np.ndarray, float]:
    """Binary logistic regression, minimising mean log-loss + ``l2/2 ||w||^2`` (no penalty
    on the bias) by Newton's method with step halving; float64, deterministic. Returns
    ``(w, b)`` with ``P(y=1 | x) = sigmoid(x @ w + b)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])  # (N, D + 1), the last column is the bias
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0

    def objective(theta):
        z = xb @ theta
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * theta[:-1] @ theta[:-1])

    theta = np.zeros(d + 1)
    value = objective(theta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(xb @ theta)))
        grad = xb.T @ (p - y) / n + reg * theta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + np.diag(reg) + 1e-10 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:
            candidate = objective(theta - t * step)
            if candidate <= value:
                break
            t *= 0.5
        theta, previous, value = theta - t * step, value, candidate
        if previous - value < 1e-12:
            break
    return theta[:-1], float(theta[-1])


def _balanced_split(n_source: int, n_target: int, max_examples: int, test_fraction: float,
                    seed: int):
    """Per domain: the same number of examples (at most ``max_examples``), split into train
    and test index lists."""
    n = min(n_source, n_target, max_examples or max(n_source, n_target))
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 1:
        raise ConfigError(f"domain probe: {n} examples per domain are too few for a "
                          f"test fraction of {test_fraction}")
    rng = np.random.default_rng([seed, 11])
    splits = []
    for size in (n_source, n_target):
        pick = rng.permutation(size)[:n]
        splits.append((np.sort(pick[n_test:]), np.sort(pick[:n_test])))
    return splits


def domain_probe(model_dir: str | Path, source: str | Path, target: str | Path, *,
                 max_examples: int = 1000, test_fraction: float = 0.3, max_len: int = 128,
                 batch_size: int = 32, seed: int = 0, l2: float = 1e-3,
                 text_field: str = "text", save: str | Path | None = None) -> dict:
    """Held-out accuracy of a linear domain head on frozen mean-pooled features of
    ``model_dir`` at telling ``source`` texts from ``target`` texts (balanced classes, so
    chance is 0.5). With ``save``, the probe is written there as a
    ``LanistrForDomainClassification`` checkpoint (with its tokenizer)."""
    from lanistr.nn.domain import LanistrForDomainClassification

    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction={test_fraction} must be in (0, 1)")
    model_dir = _path(model_dir)
    tokenizer = Tokenizer.from_pretrained(model_dir)
    texts = [read_domain_texts(source, text_field), read_domain_texts(target, text_field)]
    for path, t in zip((source, target), texts):
        if not t:
            raise DataError(path, None, "no texts")
    names = [_path(source).stem, _path(target).stem]
    if names[0] == names[1]:
        names = ["source", "target"]
    with warnings.catch_warnings():  # the probe's head is new by design
        warnings.filterwarnings("ignore", message=".*freshly initialised")
        model = LanistrForDomainClassification.from_pretrained(
            model_dir, labels=names, pooling="mean", use_pooler=False)
    max_len = min(max_len, model.config.max_len)
    splits = _balanced_split(len(texts[0]), len(texts[1]), max_examples, test_fraction, seed)
    feats = {}
    for part in (0, 1):  # 0 = train, 1 = test
        x = [pooled_features(model.model, tokenizer, [texts[d][i] for i in splits[d][part]],
                             max_len, batch_size) for d in (0, 1)]
        y = torch.cat([torch.full((len(x[d]),), d) for d in (0, 1)])
        feats[part] = (torch.cat(x), y)
    x_train, y_train = (t.double().numpy() for t in feats[0])
    mean, std = x_train.mean(0), np.maximum(x_train.std(0), 1e-6)
    w, b = fit_logistic_regression((x_train - mean) / std, y_train, l2)

    def accuracy(x, y):
        pred = ((x.double().numpy() - mean) / std) @ w + b > 0
        return float(np.mean(pred == y.numpy().astype(bool)))

    acc = accuracy(*feats[1])
    result = {"model": str(model_dir), "source": str(source), "target": str(target),
              "accuracy": acc, "train_accuracy": accuracy(*feats[0]),
              "proxy_a_distance": 2.0 * (1.0 - 2.0 * (1.0 - acc)),
              "train_per_domain": len(splits[0][0]), "test_per_domain": len(splits[0][1]),
              "max_len": max_len, "features": "mean-pooled last layer, standardised",
              "l2": l2, "seed": seed}
    if save is not None:
        with torch.no_grad():  # logits (0, z): the standardisation folded into the head
            out = model.domain_head.out
            out.weight.zero_()
            out.bias.zero_()
            out.weight[1] = torch.from_numpy(w / std)
            out.bias[1] = b - float((w / std) @ mean)
        with atomic_path(_path(save)) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "domain_probe.json", result)
        result["saved"] = str(save)
    return result


# =========================================================================== DANN


class GradualUnfreezing:
    """ULMFiT-style gradual unfreezing: at step 0 only the heads (pooler, classifier, domain
    head) train; every ``every`` steps the next encoder layer from the top is unfrozen, the
    embeddings last. Parameters already frozen when this is built (``finetune.freeze_*``)
    stay frozen. Build it *before* the optimizer, so that every parameter it will unfreeze
    has its optimizer group; a frozen parameter gets no gradient, so AdamW leaves it
    (weight decay included) untouched."""

    def __init__(self, model: nn.Module, every: int):
        if every < 1:
            raise ConfigError(f"gradual unfreezing needs a step interval >= 1, got {every}")
        self.every = every
        self.top = model.config.num_layers + 1
        self.params = [(layer_depth(name, model.config.num_layers), p)
                       for name, p in model.named_parameters() if p.requires_grad]

    def lowest_trainable_depth(self, step: int) -> int:
        return self.top - step // self.every

    def apply(self, step: int) -> None:
        lowest = self.lowest_trainable_depth(step)
        for depth, p in self.params:
            p.requires_grad_(depth >= lowest)


class DomainAdversarialTask(Task):
    """DANN on top of a fine-tuning task: each training example is a labelled source example
    paired with an unlabelled target example, both in one forward pass (the micro-batch
    holds ``2 x batch_size`` sequences). The task loss is the base task's over source rows;
    the domain loss is the cross-entropy of the domain head (source 0, target 1) over all
    rows, behind gradient reversal, times ``domain_weight``. The target partner of source
    example ``i`` in epoch ``e`` is ``perm(seed, e)[i mod T]``: deterministic, so resume and
    data parallelism stay exact. Evaluation (model selection) is the base task's, on
    *source* held-out data; the target test set is only used at the end."""

    def __init__(self, base: FinetuneTask, target: Encoded, options: DannOptions, seed: int,
                 unfreezing: GradualUnfreezing | None = None):
        self.base, self.options, self.unfreezing = base, options, unfreezing
        self.best_metric, self.greater_is_better = base.best_metric, base.greater_is_better
        self.patience = base.patience
        self.n_source = base.train_size()
        self.n_target = len(target)
        self.joint = concat_encoded([base.train_data, _unlabelled(target, base.train_data)])
        self.target_order = GlobalOrder(self.n_target, seed + 1)
        self.grl_lambda = 0.0

    # -- schedule --------------------------------------------------------------------------

    def on_step(self, step: int, total_steps: int) -> None:
        from lanistr.nn.domain import dann_lambda

        self.grl_lambda = dann_lambda(step / max(total_steps, 1), self.options.gamma,
                                      self.options.max_lambda)
        if self.unfreezing is not None:
            self.unfreezing.apply(step)

    # -- batches and losses ----------------------------------------------------------------

    def train_size(self) -> int:
        return self.n_source

    def target_partners(self, indices: Sequence[int], epoch: int) -> list[int]:
        perm = self.target_order.permutation(epoch)
        return [int(perm[i % self.n_target]) for i in indices]

    def collate(self, indices, epoch):
        partners = [self.n_source + t for t in self.target_partners(indices, epoch)]
        batch = self.base.make_batch(self.joint, list(indices) + partners)
        batch["domain_labels"] = torch.cat([torch.zeros(len(indices), dtype=torch.long),
                                            torch.ones(len(partners), dtype=torch.long)])
        return batch

    def counts(self, batch):
        out = dict(self.base.counts(batch))
        if self.options.domain_weight:
            out["domain"] = float(batch["domain_labels"].numel())
        return out

    def loss_sums(self, model, batch):
        adversarial = bool(self.options.domain_weight)
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                    **({"grl_lambda": self.grl_lambda} if adversarial else {}))
        logits = out.logits  # (2B, K) or (2B, T, K); target rows have IGNORE labels
        sums = {"loss": self.base._loss(logits.flatten(0, -2), batch["labels"].flatten())}
        if adversarial:
            sums["domain"] = self.options.domain_weight * F.cross_entropy(
                out.domain_logits.float(), batch["domain_labels"], reduction="sum")
        return sums

    @torch.no_grad()
    def domain_accuracy(self, model, max_examples: int = 256, batch_size: int = 32) -> float:
        """Accuracy of the domain head on (up to) the first ``max_examples`` training pairs
        (source + their target partners of epoch 0): 0.5 = the head cannot tell the domains
        apart, 1.0 = it always can. A diagnostic of the adversarial game, not a test score."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        indices = list(range(min(self.n_source, max_examples)))
        correct = total = 0
        for i in range(0, len(indices), batch_size):
            batch = {k: v.to(device) for k, v in self.collate(indices[i:i + batch_size], 0).items()}
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                        grl_lambda=0.0)
            correct += int((out.domain_logits.argmax(-1) == batch["domain_labels"]).sum())
            total += batch["domain_labels"].numel()
        model.train(was_training)
        return correct / max(total, 1)

    # -- evaluation and saving: the base task's ---------------------------------------------

    def eval_batches(self, rank, world_size):
        return self.base.eval_batches(rank, world_size)

    def eval_sums(self, model, batch):
        return self.base.eval_sums(model, batch)

    def finalize_metrics(self, sums):
        return self.base.finalize_metrics(sums)

    def param_groups(self, model, train: TrainConfig):
        """The base task's groups (weight decay, layer-wise decay) for everything but the
        domain head, which gets its own groups at ``lr x domain_lr_scale``: a randomly
        initialised adversary at a pretrained encoder's small learning rate barely learns in a
        short run, and then its reversed gradient carries no signal (the usual 10x for new
        layers of DANN-style fine-tuning)."""
        head = {id(p) for p in model.domain_head.parameters()}
        groups = []
        for group in self.base.param_groups(model, train):
            kept = [p for p in group["params"] if id(p) not in head]
            if kept:
                groups.append({**group, "params": kept})
        lr = train.lr * self.options.domain_lr_scale
        params = [p for p in model.domain_head.parameters() if p.requires_grad]
        for decayed in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decayed]
            if chosen:
                groups.append({"params": chosen, "lr": lr,
                               "weight_decay": train.weight_decay if decayed else 0.0})
        return groups

    def save_extra(self, directory: Path) -> None:
        self.base.save_extra(directory)


def _unlabelled(target: Encoded, like: Encoded) -> Encoded:
    """``target`` with every label IGNORE, in the layout of ``like`` (class ids or per-token)."""
    if isinstance(like.targets, np.ndarray):
        targets = np.full(len(target), IGNORE, dtype=np.int64)
    else:
        targets = [np.full(len(x), IGNORE, dtype=np.int64) for x in target.ids]
    types = None
    if like.types is not None:
        types = target.types or [np.zeros(len(x), dtype=np.int8) for x in target.ids]
    return Encoded(target.path, target.lines, target.ids, types, targets, target.num_truncated)


def encode_target(kind: str, path: str, data: FinetuneDataConfig, tokenizer: Tokenizer,
                  max_examples: int, seed: int) -> Encoded:
    """Unlabelled target-domain examples for the DANN task of ``kind`` (labels ignored)."""
    path = str(_path(path))
    if kind == "tag":
        from lanistr.data.readers import read_conll

        sentences = read_conll(path)
        if max_examples and len(sentences) > max_examples:
            keep = np.sort(np.random.default_rng([seed, 5]).permutation(len(sentences))[:max_examples])
            sentences = [sentences[i] for i in keep]
        batch_ids = []
        for start in range(0, len(sentences), 512):
            chunk = sentences[start:start + 512]
            enc = tokenizer.encode_words([s.words for s in chunk], max_length=data.max_len,
                                         padding=True, truncation=True)
            lengths = enc.attention_mask.sum(1).tolist()
            ids = enc.input_ids.numpy().astype(np.int32)
            batch_ids += [ids[j, :n].copy() for j, n in enumerate(lengths)]
        return Encoded(path, [s.line for s in sentences], batch_ids, None,
                       np.zeros(len(batch_ids), dtype=np.int64))
    texts, pairs, _, lines = read_labelled_texts(path, data.text_field, None,
                                                 data.text_pair_field)
    if max_examples and len(texts) > max_examples:
        keep = np.sort(np.random.default_rng([seed, 5]).permutation(len(texts))[:max_examples])
        texts = [texts[i] for i in keep]
        pairs = None if pairs is None else [pairs[i] for i in keep]
        lines = [lines[i] for i in keep]
    ids, types, cut = encode_texts(tokenizer, texts, pairs, data.max_len, path=path, lines=lines)
    return Encoded(path, lines, ids, types, np.zeros(len(ids), dtype=np.int64), cut)


def domain_adversarial_model(model: nn.Module) -> nn.Module:
    """``model`` (a fine-tuning model) as its registered domain-head variant, with the same
    weights and a fresh domain head."""
    from lanistr.nn.domain import with_domain_head

    cls = with_domain_head(type(model))
    out = cls(model.config)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("domain_head.") for k in missing), missing
    out.config.architecture = cls.__name__
    return out


@dataclass
class DannResult:
    model_dir: Path
    steps: int
    stop_reason: str
    eval_metrics: dict
    test_metrics: dict | None
    target_examples: int
    domain_accuracy: float | None = None  # of the final domain head on training pairs


def export_task_model(model_dir: Path, task: Task) -> None:
    """Replace the DANN checkpoint in ``model_dir`` by the plain task model (the domain head
    is dropped), so ``lanistr evaluate`` / ``predict`` use it like any fine-tuned model."""
    import lanistr.nn.domain  # noqa: F401  (registers the domain-head architectures)
    from lanistr.nn import load_model

    full = load_model(model_dir)
    plain_cls = getattr(type(full), "task_class", None)
    if plain_cls is None:
        raise ConfigError(f"{model_dir}: architecture {type(full).__name__} has no domain "
                          "head to drop")
    plain = plain_cls(full.config)
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("domain_head.")}
    plain.load_state_dict(state)
    plain.config.architecture = plain_cls.__name__
    with atomic_path(model_dir) as tmp:
        plain.save_pretrained(tmp)
        task.save_extra(tmp)


def dann(run: DannRun | dict, output_dir: str | Path, resume: bool = False,
         truncate: bool = True) -> DannResult:
    """Domain-adversarial fine-tuning from a run config dict (sections task, init, model,
    data, finetune, dann, train). Writes ``output_dir/model`` (the plain task model: the
    best on the source held-out data when there is one, else the last) and, with
    ``data.test`` (labelled *target* test data), ``output_dir/test_metrics.json``."""
    from lanistr.tasks.finetune import run_tokenizer
    from lanistr.tasks.predict import Predictor
    from lanistr.tasks.runner import eval_once_per_epoch, run_training, start

    if isinstance(run, dict):
        run = parse_run("dann", run)
    output_dir = Path(output_dir)
    kind, train, data, options, adapt = run.task, run.train, run.data, run.finetune, run.dann
    tokenizer = run_tokenizer(run)

    ctx = start(train, output_dir)
    if adapt.unfreeze_every and ctx.enabled:
        raise ConfigError("dann.unfreeze_every: gradual unfreezing is not supported under "
                          "torchrun (DDP fixes the trainable parameters when it starts)")
    torch.manual_seed(train.seed)
    base_model, base_task = TASKS[kind](Setup(run, tokenizer, ctx, truncate))
    model = domain_adversarial_model(base_model)
    del base_model
    if options.freeze_embeddings or options.freeze_layers:
        n = freeze(model, options.freeze_embeddings, options.freeze_layers)
        if ctx.is_main:
            log.info("froze %.2fM parameters", n / 1e6)
    unfreezing = GradualUnfreezing(model, adapt.unfreeze_every) if adapt.unfreeze_every else None
    target = encode_target(kind, adapt.target, data, tokenizer, adapt.target_max_examples,
                           train.seed)
    task = DomainAdversarialTask(base_task, target, adapt, train.seed, unfreezing)
    run = eval_once_per_epoch(run, task, ctx)
    train = run.train
    if ctx.is_main:
        log.info("dann/%s: %d labelled source examples, %d unlabelled target examples; "
                 "domain weight %g, lambda -> %g; model %s, %.2fM parameters", kind,
                 task.n_source, task.n_target, adapt.domain_weight, adapt.max_lambda,
                 type(model).__name__, model.num_parameters() / 1e6)
    result = run_training(model, task, train, output_dir, ctx, resume=resume,
                          run_config=run.to_dict())
    test_metrics = domain_acc = None
    if ctx.is_main:
        if adapt.domain_weight:
            domain_acc = task.domain_accuracy(model)
            write_json(output_dir / "domain_metrics.json",
                       {"domain_accuracy": domain_acc, "on": "training pairs (source + target)",
                        "final_lambda": task.grl_lambda, "steps": result.steps})
            log.info("domain head accuracy on training pairs: %.4f (0.5 = domains "
                     "indistinguishable)", domain_acc)
        export_task_model(result.model_dir, task)
        if data.test:
            test_metrics = Predictor(result.model_dir).evaluate_file(data.test,
                                                                     progress=train.progress)
            write_json(output_dir / "test_metrics.json", test_metrics)
    return DannResult(result.model_dir, result.steps, result.stop_reason, result.metrics,
                      test_metrics, task.n_target, domain_acc)


__all__ = [
    "DannResult", "DomainAdversarialTask",
    "GradualUnfreezing", "dapt", "dann", "domain_probe", "extend_tokenizer", "extend_vocabulary",
    "fit_logistic_regression", "frequent_new_words", "pooled_features", "read_domain_texts",
]
