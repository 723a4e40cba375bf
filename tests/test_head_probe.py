"""The head warm-up (``finetune.head_init: probe``): the fitted head is scikit-learn's
logistic regression, and it reads exactly the features the model's classifier reads (a run
with it resuming bitwise: tests/test_finetune.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from lanistr.config import LanistrConfig
from lanistr.nn import LanistrForSequenceClassification, LanistrForTokenClassification
from lanistr.tasks import frozen_cache
from lanistr.tasks.head_probe import fit_linear, head_features, warm_up_head
from lanistr.tasks.labelled import Encoded
from lanistr.tasks.objectives import ClassificationTask, TaggingTask
from lanistr.tasks.run_config import FinetuneOptions


def _blobs(n=300, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(k, d))[y]
    return torch.tensor(x), torch.tensor(y)


@pytest.mark.parametrize("balanced", [False, True])
def test_fit_linear_is_sklearn_logistic_regression(balanced):
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs()
    if balanced:  # an imbalanced set, each class weighing the same
        keep = (y != 2) | (torch.arange(len(y)) % 4 == 0)
        x, y = x[keep], y[keep]
    counts = torch.bincount(y, minlength=3).double()
    cw = (len(y) / (3 * counts)) if balanced else None
    l2 = 0.01
    w, b = fit_linear(x, y, 3, cw, l2=l2, max_iter=500)
    # sklearn minimises C * sum_i weight_i * CE_i + ||W||^2 / 2; ours divides the weighted sum
    # by sum_i weight_i: the same minimiser at C = 1 / (l2 * sum_i weight_i)
    norm = float(cw[y].sum()) if balanced else float(len(y))
    ref = sklearn.LogisticRegression(C=1 / (l2 * norm), max_iter=5000, tol=1e-10,
                                     class_weight="balanced" if balanced else None)
    ref.fit(x.numpy(), y.numpy())
    ours = (x @ w.T + b).numpy()
    theirs = ref.decision_function(x.numpy())
    # multinomial logits are defined up to a per-row constant: compare centred logits
    centre = lambda z: z - z.mean(1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(centre(ours), centre(theirs), atol=2e-3)


def _toy(n=24, vocab=60, seed=0, tags=False):
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, vocab, int(rng.integers(3, 10))), [3]])
           .astype(np.int32) for _ in range(n)]
    if tags:
        targets = [np.where(np.arange(len(x)) % 5 == 0, -100, x % 3).astype(np.int64)
                   for x in ids]
    else:
        targets = (np.array([int(x[1]) for x in ids]) % 2).astype(np.int64)
    return Encoded("<toy>", list(range(1, n + 1)), ids, None, targets)


class _Tok:
    pad_id = 0


@pytest.mark.parametrize("tags", [False, True])
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("max_examples", [100, 7])
def test_head_features_are_what_the_classifier_reads(tags, cached, max_examples):
    """The probe's features times the head's weights are the model's own logits (eval mode),
    through the full model or from the frozen cache, per token for a tagger (ignored
    positions left out); capped, for evenly spaced examples."""
    torch.manual_seed(0)
    cls = LanistrForTokenClassification if tags else LanistrForSequenceClassification
    config = LanistrConfig.from_any({"preset": "tiny", "vocab_size": 60, "pooling": "mean",
                                     "labels": ["a", "b", "c"] if tags else ["a", "b"]})
    model = cls(config)
    data = _toy(tags=tags)
    task = (TaggingTask if tags else ClassificationTask)(
        data, None, config.labels, _Tok(), FinetuneOptions(), {})
    if cached:
        frozen_cache.attach(task, model, 1)
    x, y = head_features(model, task, max_examples=max_examples)
    subset = (list(range(len(data))) if max_examples >= len(data) else
              np.linspace(0, len(data) - 1, max_examples).round().astype(int).tolist())
    model.eval()
    with torch.no_grad():
        rows, gold = [], []
        for i in subset:
            ids = data.ids[i]
            logits = model(torch.tensor(ids[None], dtype=torch.long)).logits[0]
            target = torch.as_tensor(data.targets[i]).reshape(-1)
            logits = logits.reshape(-1, logits.shape[-1])
            keep = target != -100
            rows.append(logits[keep])
            gold.append(target[keep])
    order = np.argsort([len(data.ids[i]) for i in subset], kind="stable")  # length-sorted
    expected = torch.cat([rows[i] for i in order])
    assert_close(model.classifier.out(x), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(y, torch.cat([gold[i] for i in order]))


def test_warm_up_head_fits_the_training_data_better_than_a_random_head():
    torch.manual_seed(0)
    config = LanistrConfig.from_any({"preset": "tiny", "vocab_size": 60, "labels": ["a", "b"],
                                     "pooling": "mean"})
    model = LanistrForSequenceClassification(config)
    data = _toy(n=60)
    task = ClassificationTask(data, None, config.labels, _Tok(), FinetuneOptions(), {})
    x, y = head_features(model, task)
    before = torch.nn.functional.cross_entropy(model.classifier.out(x), y)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    warm_up_head(model, task)
    after = torch.nn.functional.cross_entropy(model.classifier.out(x), y)
    assert after < before
    for k, v in model.state_dict().items():  # only the head moved
        if not k.startswith("classifier"):
            assert torch.equal(v, body[k]), k


def test_a_fit_that_goes_non_finite_leaves_the_random_head(monkeypatch, caplog):
    import lanistr.tasks.head_probe as hp

    torch.manual_seed(0)
    config = LanistrConfig.from_any({"preset": "tiny", "vocab_size": 60, "labels": ["a", "b"]})
    model = LanistrForSequenceClassification(config)
    task = ClassificationTask(_toy(), None, config.labels, _Tok(), FinetuneOptions(), {})
    head = model.classifier.out.weight.clone()
    monkeypatch.setattr(hp, "fit_linear", lambda x, y, k, cw: (
        torch.full((k, x.shape[1]), float("nan")), torch.zeros(k)))
    with caplog.at_level("WARNING", logger="lanistr"):
        warm_up_head(model, task)
    assert torch.equal(model.classifier.out.weight, head)
    assert "the head starts random" in caplog.text
