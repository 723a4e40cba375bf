"""lanistr's CPU dropout: statistics, gradient, reproducibility, and its use in the model."""

import pytest
import torch

from lanistr.config import LanistrConfig
from lanistr.nn import LanistrForMaskedLM
from lanistr.nn.dropout import Dropout, dropout, keep_multiplier


def test_identity_when_not_training_or_p_zero():
    x = torch.randn(5, 7)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    assert Dropout(0.3).eval()(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_fraction_and_unbiased_scale(p):
    torch.manual_seed(0)
    m = keep_multiplier((300, 1001), p, torch.float32)  # odd size: not a multiple of 4
    kept = m != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    scale = m[kept].unique()
    assert scale.numel() == 1
    # The scale is the exact inverse keep probability of the (1/65536-rounded) p.
    assert scale.item() == pytest.approx(65536 / (65536 - round(p * 65536)), rel=1e-6)
    y = dropout(torch.ones(400, 1000), p)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)


def test_gradient_is_the_mask_and_seed_reproduces_it():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, y.detach() / x.detach())
    torch.manual_seed(3)
    torch.testing.assert_close(dropout(x, 0.2), y)


def test_low_precision_keeps_dtype_and_exact_scale():
    x = torch.ones(1000, dtype=torch.bfloat16)
    y = dropout(x, 0.1)
    assert y.dtype == torch.bfloat16
    assert set(y.float().unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.9).bfloat16())}


def test_training_model_output_depends_on_seed_and_eval_is_deterministic():
    config = LanistrConfig.from_name("tiny", dropout=0.1, attention_dropout=0.1)
    model = LanistrForMaskedLM(config)
    ids = torch.randint(5, 99, (2, 9))
    torch.manual_seed(1)
    a = model(ids).logits
    torch.manual_seed(1)
    b = model(ids).logits
    torch.manual_seed(2)
    c = model(ids).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    model.eval()
    torch.testing.assert_close(model(ids).logits, model(ids).logits)
