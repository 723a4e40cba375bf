"""Registry, capabilities and the base class every attention backend derives from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lanistr.config import BACKEND_CONFIGS
from lanistr.errors import ConfigError, LanistrError
from lanistr.nn.dropout import dropout


class AttentionCapabilityError(LanistrError):
    """A backend was asked for something it does not support."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; :meth:`AttentionBackend.forward` refuses the rest.

    Every backend honours ``key_padding_mask`` (the contract, not a capability: the encoder's
    padding invariance depends on it). ``returns_weights`` stays a field although every
    built-in backend returns weights: the contract lets a registered kernel decline them.
    """

    causal: bool = False
    cross_attention: bool = False  # cross=True: keys/values from another sequence, any Tk
    returns_weights: bool = True
    weights_form: str = "dense"  # dense | band | lowrank | buckets
    # Parameters sized by the model's max_len (Linformer's E/F): longer key sequences are
    # refused. False = any length.
    bounded_by_max_len: bool = False
    # Keys are derived from the queries: ``k`` is ignored (may be None) and
    # MultiHeadAttention does not compute the key projection.
    shared_qk: bool = False
    complexity: str = "O(T^2)"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    cls: type[AttentionBackend]
    config_cls: type

    @property
    def capabilities(self) -> Capabilities:
        return self.cls.capabilities


_REGISTRY: dict[str, BackendSpec] = {}


def register_attention(name: str):
    """Class decorator: ``@register_attention("full")``; the backend's parameters are the
    config class registered under the same name in :data:`lanistr.config.BACKEND_CONFIGS`."""

    def deco(cls: type[AttentionBackend]) -> type[AttentionBackend]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"attention backend {name!r} registered twice")
        if name not in BACKEND_CONFIGS:
            raise ValueError(f"attention backend {name!r} has no config class in "
                             "lanistr.config.BACKEND_CONFIGS")
        cls.name = name
        _REGISTRY[name] = BackendSpec(name, cls, BACKEND_CONFIGS[name])
        return cls

    return deco


def get_backend(name: str) -> BackendSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"attention.backend={name!r} is not a registered backend "
                          f"(choose from {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def list_backends() -> list[BackendSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def build_attention(attention_config, *, max_len: int, dropout: float = 0.0,
                    layer_idx: int = 0) -> AttentionBackend:
    """Instantiate the backend named by a :class:`lanistr.config.AttentionConfig`."""
    spec = get_backend(attention_config.backend)
    return spec.cls(attention_config.settings, max_len=max_len, dropout=dropout,
                    layer_idx=layer_idx)


class SparseAttentionWeights:
    """Attention weights in a backend's own compact form.

    Subclasses document their fields and implement :meth:`densify`, which scatters them to a
    dense ``(B, H, Tq, Tk)`` tensor (refusing beyond ``max_tokens`` to protect memory), and
    :meth:`layer_view`, what :mod:`lanistr.viz` reads.
    """

    form: ClassVar[str] = "sparse"

    def densify(self, max_tokens: int = 4096) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_view(self, index: int = 0, length: int | None = None):
        """Example ``index``, first ``length`` tokens, as a :class:`lanistr.viz.weights.
        LayerAttention` (numpy). Subclasses return their compact form; this default densifies
        (refusing beyond :data:`lanistr.viz.weights.MAX_DENSE_TOKENS` tokens)."""
        from lanistr.viz.weights import MAX_DENSE_TOKENS, DenseAttention

        w = self.densify(max_tokens=MAX_DENSE_TOKENS)[index].detach().float().cpu().numpy()
        n = w.shape[-1] if length is None else length
        return DenseAttention(w[:, :n, :n])

    @staticmethod
    def _check_size(t: int, max_tokens: int) -> None:
        if t > max_tokens:
            raise AttentionCapabilityError(
                f"refusing to densify {t}x{t} attention weights (max_tokens={max_tokens}); "
                "use the sparse form or raise max_tokens")


class AttentionBackend(nn.Module):
    """Base class; subclasses implement :meth:`attend`.

    ``max_len``: the model's maximum length (what a ``bounded_by_max_len`` backend sizes its
    parameters by). ``dropout``: the attention-dropout rate; this class is its one owner:
    :attr:`dropout_p` is the rate in force (0 in eval mode) and :meth:`drop` applies it to
    materialised probabilities (with :func:`lanistr.nn.dropout.dropout`); fused kernels (SDPA,
    the sliding-window kernel, which redraws its masks in the backward) take ``dropout_p``.
    ``layer_idx``: the layer's index (LSH seeds its hashing with it).
    """

    name: ClassVar[str] = "?"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, config, *, max_len: int, dropout: float = 0.0, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.max_len = max_len
        self.dropout = dropout
        self.layer_idx = layer_idx

    @property
    def dropout_p(self) -> float:
        """The attention-dropout probability in force: the rate in training, else 0."""
        return self.dropout if self.training else 0.0

    def drop(self, probs: torch.Tensor) -> torch.Tensor:
        """Attention dropout on materialised probabilities (identity in eval mode)."""
        return dropout(probs, self.dropout_p)

    def forward(self, q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor, *,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False,
                need_weights: bool = False, cross: bool = False):
        """``cross=True``: keys/values come from another sequence (cross-attention); with
        ``cross=False`` queries and keys are one sequence (``Tq < Tk`` only for a key/value
        cache, where ``causal`` aligns the queries with the last keys)."""
        self._check_request(q, k, v, causal, need_weights, cross)
        return self.attend(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                           need_weights=need_weights)

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):  # pragma: no cover
        raise NotImplementedError

    def _check_request(self, q, k, v, causal, need_weights, cross) -> None:
        caps = self.capabilities
        name = self.name
        if causal and not caps.causal:
            raise AttentionCapabilityError(
                f"attention backend {name!r} does not support causal masking; "
                f"use one of: {_who_can('causal')}")
        if need_weights and not caps.returns_weights:
            raise AttentionCapabilityError(
                f"attention backend {name!r} cannot return attention weights; "
                f"use one of: {_who_can('returns_weights')}")
        if cross and not caps.cross_attention:
            raise AttentionCapabilityError(
                f"attention backend {name!r} does not support cross-attention; "
                f"use one of: {_who_can('cross_attention')}")
        if k is None and not caps.shared_qk:
            raise AttentionCapabilityError(
                f"attention backend {name!r} needs keys (k=None is for shared-QK backends: "
                f"{_who_can('shared_qk')})")
        tq, tk = q.shape[-2], v.shape[-2]  # v: k may be None (shared QK)
        if not cross and tq != tk and not caps.cross_attention:
            raise AttentionCapabilityError(
                f"attention backend {name!r} attends a sequence to itself: got {tq} queries "
                f"and {tk} keys (for cross-attention pass cross=True to one of: "
                f"{_who_can('cross_attention')})")
        if caps.bounded_by_max_len and tk > self.max_len:
            raise AttentionCapabilityError(
                f"attention backend {name!r} takes at most the model's max_len={self.max_len} "
                f"tokens (its parameters have max_len rows), got a sequence of {tk}; "
                f"any length: {_who_can('bounded_by_max_len', False)}")

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                           for f in dataclasses.fields(self.config))
        return f"{self.name}: {fields}" if fields else self.name


def _who_can(cap: str, value: bool = True) -> str:
    return ", ".join(s.name for s in list_backends()
                     if getattr(s.capabilities, cap) == value) or "none"


def backends_table() -> str:
    """The registry as a plain-text table (what ``lanistr backends`` prints)."""
    header = ["backend", "causal", "cross", "weights", "form", "max_len", "shared_qk", "cost",
              "parameters"]
    rows = []
    for spec in list_backends():
        c = spec.capabilities
        params = ", ".join(
            f"{f.name}={_default(f)}" for f in dataclasses.fields(spec.config_cls)) or "-"
        rows.append([spec.name, _yn(c.causal), _yn(c.cross_attention), _yn(c.returns_weights),
                     c.weights_form, "model" if c.bounded_by_max_len else "any",
                     _yn(c.shared_qk), c.complexity, params])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"
