"""Domain heads: gradient reversal, a domain classifier usable on any encoder, and the
domain-adversarial (DANN, Ganin et al. 2016) variants of the task models.

* :func:`grad_reverse` is the identity forward and multiplies the gradient by ``-lambda``
  backward, so a domain classifier behind it *minimises* its loss while the encoder below
  it is pushed to *maximise* it (features from which the domain cannot be told).
* :class:`DomainHead` maps a sequence vector ``(B, D)`` to domain logits ``(B, K)``.
* :class:`LanistrForDomainClassification` is encoder + :class:`DomainHead` (labels = the
  domain names), e.g. a domain probe on frozen features.
* :func:`with_domain_head` turns a task model class into one that also returns
  ``domain_logits`` when called with ``grl_lambda=...``; the two task models of fine-tuning
  have registered variants, so checkpoints of a DANN run load with ``load_model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from lanistr.config import LanistrConfig
from lanistr.nn.models import (
    LanistrForSequenceClassification,
    LanistrForTokenClassification,
    PreTrainedModel,
    _WithEncoder,
    register_architecture,
)
from lanistr.nn.outputs import ModelOutput


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.neg() * ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Identity forward; ``-lambda_ * grad`` backward."""
    return _GradReverse.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a module with a settable ``lambda_``."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = lambda_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def dann_lambda(progress: float, gamma: float = 10.0, max_lambda: float = 1.0) -> float:
    """The DANN schedule ``max_lambda * (2 / (1 + exp(-gamma p)) - 1)``, ``p`` in [0, 1]:
    0 at the start (the domain head is still random), close to ``max_lambda`` at the end."""
    p = min(max(float(progress), 0.0), 1.0)
    return max_lambda * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class DomainHead(nn.Module):
    """Sequence vector ``(B, D)`` -> domain logits ``(B, K)``. ``hidden=0`` is a linear
    (logistic-regression) head, otherwise dense + ReLU + dropout + dense as in DANN. With
    ``lambda_`` given, the features pass through gradient reversal first."""

    def __init__(self, config: LanistrConfig, num_domains: int = 2, hidden: int = 0):
        super().__init__()
        d = config.hidden_size
        if hidden:
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                     nn.Linear(hidden, num_domains))
        else:
            self.net = nn.Sequential(nn.Linear(d, num_domains))

    def forward(self, features: torch.Tensor, lambda_: float | None = None) -> torch.Tensor:
        if lambda_ is not None:
            features = grad_reverse(features, lambda_)
        return self.net(features)

    @property
    def out(self) -> nn.Linear:
        """The last (output) layer."""
        return self.net[-1]


@register_architecture
class LanistrForDomainClassification(_WithEncoder):
    """Encoder + linear :class:`DomainHead` on the pooled sequence vector; ``config.labels``
    names the domains (at least two)."""

    head_prefixes = ("domain_head.", "model.pooler.")

    def __init__(self, config: LanistrConfig):
        super().__init__(config)
        self.domain_head = DomainHead(config, max(len(config.labels), 2))
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                grl_lambda: float | None = None, output_attentions=False,
                output_hidden_states=False) -> ModelOutput:
        out = self.encode(input_ids, attention_mask, token_type_ids,
                          output_attentions=output_attentions,
                          output_hidden_states=output_hidden_states)
        out.logits = self.domain_head(out.pooled, grl_lambda)  # (B, num_domains)
        return out


@dataclass
class DomainAdversarialOutput(ModelOutput):
    domain_logits: torch.Tensor | None = None  # (B, num_domains), behind gradient reversal


def with_domain_head(cls: type[PreTrainedModel]) -> type[PreTrainedModel]:
    """A subclass of task model ``cls`` with a two-domain :class:`DomainHead` (an MLP as wide
    as the model) on the pooled vector. Its forward takes ``grl_lambda``: when given, the
    output also has ``domain_logits``, computed behind a gradient reversal of that weight.
    The class is registered for ``load_model`` (the same ``cls`` gives the same class);
    loading its checkpoint as ``cls`` drops the domain head."""
    if cls in _VARIANTS:
        return _VARIANTS[cls]

    class WithDomainHead(cls):
        head_prefixes = (*cls.head_prefixes, "domain_head.")

        def __init__(self, config: LanistrConfig):
            super().__init__(config)
            self.domain_head = DomainHead(config, 2, hidden=config.hidden_size)
            self.post_init()

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, *,
                    grl_lambda: float | None = None, **kwargs) -> ModelOutput:
            out = super().forward(input_ids, attention_mask, token_type_ids, **kwargs)
            if grl_lambda is None:
                return out
            values = {f.name: getattr(out, f.name) for f in fields(out)}
            return DomainAdversarialOutput(
                **values, domain_logits=self.domain_head(out.pooled, grl_lambda))

    WithDomainHead.task_class = cls
    WithDomainHead.__name__ = WithDomainHead.__qualname__ = f"{cls.__name__}WithDomainHead"
    _VARIANTS[cls] = WithDomainHead
    return register_architecture(WithDomainHead)


_VARIANTS: dict[type, type[PreTrainedModel]] = {}


LanistrForSequenceClassificationWithDomainHead = with_domain_head(LanistrForSequenceClassification)
LanistrForTokenClassificationWithDomainHead = with_domain_head(LanistrForTokenClassification)
