"""Registry, capabilities and the base class every attention backend derives from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lanistr.config import BACKEND_CONFIGS
from lanistr.errors import ConfigError, LanistrError


class AttentionCapabilityError(LanistrError):
    """A backend was asked for something it does not support."""


@dataclass(frozen=True)
class Capabilities:
    padding_mask: bool = True
    causal: bool = False
    cross_attention: bool = False  # Tq != Tk, keys from another sequence
    returns_weights: bool = True
    weights_form: str = "dense"  # dense | band | lowrank | buckets
    max_len: int | None = None  # None = no limit; "config" limits are checked by the backend
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


def build_attention(attention_config, *, num_heads: int, head_dim: int, max_len: int,
                    dropout: float, layer_idx: int = 0) -> AttentionBackend:
    """Instantiate the backend named by a :class:`lanistr.config.AttentionConfig`."""
    spec = get_backend(attention_config.backend)
    return spec.cls(attention_config.settings, num_heads=num_heads, head_dim=head_dim, max_len=max_len,
                    dropout=dropout, layer_idx=layer_idx)


class SparseAttentionWeights:
    """Attention weights in a backend's own compact form.

    Subclasses document their fields and implement :meth:`densify`, which scatters them to a
    dense ``(B, H, Tq, Tk)`` tensor (refusing beyond ``max_tokens`` to protect memory).
    """

    form: ClassVar[str] = "sparse"

    def densify(self, max_tokens: int = 4096) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _check_size(t: int, max_tokens: int) -> None:
        if t > max_tokens:
            raise AttentionCapabilityError(
                f"refusing to densify {t}x{t} attention weights (max_tokens={max_tokens}); "
                "use the sparse form or raise max_tokens")


class AttentionBackend(nn.Module):
    """Base class; subclasses implement :meth:`attend`."""

    name: ClassVar[str] = "?"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, config, *, num_heads: int, head_dim: int, max_len: int, dropout: float,
                 layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_len = max_len
        self.dropout = dropout
        self.layer_idx = layer_idx

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False,
                need_weights: bool = False):
        self._check_request(q, k, key_padding_mask, causal, need_weights)
        return self.attend(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                           need_weights=need_weights)

    def attend(self, q, k, v, *, key_padding_mask, causal, need_weights):  # pragma: no cover
        raise NotImplementedError

    def _check_request(self, q, k, key_padding_mask, causal, need_weights) -> None:
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
        if q.shape[-2] != k.shape[-2] and not caps.cross_attention:
            raise AttentionCapabilityError(
                f"attention backend {name!r} does not support cross-attention; "
                f"use one of: {_who_can('cross_attention')}")
        if key_padding_mask is not None and not caps.padding_mask and bool(key_padding_mask.any()):
            raise AttentionCapabilityError(
                f"attention backend {name!r} does not support padding masks; "
                f"use one of: {_who_can('padding_mask')}")
        if caps.max_len is not None and k.shape[-2] > caps.max_len:
            raise AttentionCapabilityError(
                f"attention backend {name!r} supports at most {caps.max_len} tokens, "
                f"got {k.shape[-2]}")

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                           for f in dataclasses.fields(self.config))
        return f"{self.name}: {fields}" if fields else self.name


def _who_can(cap: str) -> str:
    return ", ".join(s.name for s in list_backends() if getattr(s.capabilities, cap)) or "none"


def backends_table() -> str:
    """The registry as a plain-text table (what ``lanistr backends`` prints)."""
    header = ["backend", "padding", "causal", "cross", "weights", "form", "max_len", "cost",
              "parameters"]
    rows = []
    for spec in list_backends():
        c = spec.capabilities
        params = ", ".join(
            f"{f.name}={_default(f)}" for f in dataclasses.fields(spec.config_cls)) or "-"
        rows.append([spec.name, _yn(c.padding_mask), _yn(c.causal), _yn(c.cross_attention),
                     _yn(c.returns_weights), c.weights_form, str(c.max_len or "any"),
                     c.complexity, params])
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
