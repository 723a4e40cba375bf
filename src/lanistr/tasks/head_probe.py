"""A head warm-up: fit the new classifier on the pretrained features before fine-tuning.

A fine-tuning run starts with a random classifier on top of a pretrained encoder; its first
steps send that head's noise back into the pretrained layers. Linear probing then fine-tuning
(LP-FT; Kumar et al., 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") first fits the head alone, as a logistic regression on the features the
untouched model gives each training example (eval mode: no dropout), and fine-tunes the whole
model from there.

``finetune.head_init: probe`` does this for classifiers and taggers: one pass over the
training data (through the frozen cache where there is one), then full-batch L-BFGS on
``mean weighted cross-entropy + l2 / 2 * ||W||^2`` (the bias unpenalised, the task's class
weights applied): the same minimiser as scikit-learn's ``LogisticRegression(C=1 / (l2 * N))``
(tested). It draws no random numbers, so a run stays reproducible from its seed.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lanistr.precision import autocast
from lanistr.tasks.labelled import IGNORE, length_batches

log = logging.getLogger("lanistr")

#: the L2 weight of the probe (per example-averaged loss): scikit-learn's C = 1 / (L2 * N),
#: e.g. C = 0.1 for 10,000 training examples
L2 = 1e-3
MAX_ITER = 100
#: training examples the probe reads at most (evenly spaced through the training set): a
#: logistic regression on 384-1024 features needs no more, and a tagger's rows are its tokens
MAX_EXAMPLES = 20_000


@torch.no_grad()
def head_features(model: nn.Module, task, precision: str = "fp32", batch_size: int = 64,
                  max_examples: int = MAX_EXAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """What the classifier's linear layer reads for the training examples (per real token
    for a tagger; at most ``max_examples`` examples, evenly spaced), in eval mode:
    ``(features (N, D) float32, targets (N,))``."""
    linear = model.classifier.out
    device = next(model.parameters()).device
    seen: list[torch.Tensor] = []
    hook = linear.register_forward_hook(lambda _m, args, _out: seen.append(args[0].float()))
    was_training = model.training
    model.eval()
    xs, ys = [], []
    try:
        data = task.train_data
        n = len(data)
        subset = (range(n) if n <= max_examples else
                  np.linspace(0, n - 1, max_examples).round().astype(np.int64).tolist())
        for pick in length_batches([data.ids[i] for i in subset], batch_size):
            idx = [subset[i] for i in pick]
            batch = task._with_cache(task.make_batch(data, idx), task.train_cache, idx)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(precision, device):
                task._logits(model, batch)
            x, y = seen.pop(), batch["labels"]
            x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1)  # tagging: (B*T, D)
            keep = y != IGNORE
            xs.append(x[keep].cpu())
            ys.append(y[keep].cpu())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(xs), torch.cat(ys)


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_labels: int,
               class_weight: torch.Tensor | None = None, l2: float = L2,
               max_iter: int = MAX_ITER) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: ``(weight (K, D), bias (K,))``
    minimising the weighted mean cross-entropy + ``l2 / 2 * ||weight||^2``, from zeros."""
    x, y = x.double(), y.long()
    w = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    cw = None if class_weight is None else class_weight.double()
    norm = float(len(y)) if cw is None else float(cw[y].sum())
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y, weight=cw, reduction="sum") / norm
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def warm_up_head(model: nn.Module, task, precision: str = "fp32") -> None:
    """Set ``model.classifier.out`` to the logistic regression fitted on the training data's
    features (:func:`head_features`, :func:`fit_linear`) and log what it reaches."""
    t = time.perf_counter()
    x, y = head_features(model, task, precision)
    if not len(y):
        return
    linear = model.classifier.out
    w, b = fit_linear(x, y, linear.out_features, task.class_weight)
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        log.warning("finetune.head_init=probe: the fit did not converge to finite weights "
                    "(features not finite?); the head starts random")
        return
    with torch.no_grad():
        linear.weight.copy_(w.to(linear.weight.dtype))
        linear.bias.copy_(b.to(linear.bias.dtype))
    accuracy = float(((x.double() @ w.T + b).argmax(-1) == y).double().mean())
    log.info("finetune.head_init=probe: the new head was fitted to the pretrained features "
             "first (logistic regression, L2 %g, on %d %s; training accuracy %.3f, %.0f s)",
             L2, len(y), "tokens" if task.kind == "tag" else "examples", accuracy,
             time.perf_counter() - t)
