"""The attention seam: one contract, a registry of backends.

Every backend is a ``torch.nn.Module`` registered with :func:`register_attention` and called as::

    out, weights = backend(q, k, v, key_padding_mask=None, causal=False, need_weights=False)

with ``q`` of shape ``(B, H, Tq, Dh)``, ``k`` and ``v`` of shape ``(B, H, Tk, Dh)``,
``key_padding_mask`` a bool ``(B, Tk)`` tensor that is True at padding (masked out), and
``out`` of shape ``(B, H, Tq, Dh)``. ``weights`` is None unless asked for; then it is a dense
``(B, H, Tq, Tk)`` tensor or a :class:`SparseAttentionWeights` whose ``densify()`` gives one.
Each backend declares its :class:`Capabilities`; asking for something it cannot do raises
:class:`AttentionCapabilityError` naming a backend that can. There is no silent fallback.
"""

from lanistr.nn.attention.base import (
    AttentionBackend,
    AttentionCapabilityError,
    BackendSpec,
    Capabilities,
    SparseAttentionWeights,
    backends_table,
    build_attention,
    get_backend,
    list_backends,
    register_attention,
)

# Importing the backend modules registers them.
from lanistr.nn.attention import full  # noqa: E402,F401  isort: skip
from lanistr.nn.attention import sliding_window  # noqa: E402,F401  isort: skip
from lanistr.nn.attention import linformer  # noqa: E402,F401  isort: skip
from lanistr.nn.attention import lsh  # noqa: E402,F401  isort: skip

__all__ = [
    "AttentionBackend",
    "AttentionCapabilityError",
    "BackendSpec",
    "Capabilities",
    "SparseAttentionWeights",
    "backends_table",
    "build_attention",
    "get_backend",
    "list_backends",
    "register_attention",
]
