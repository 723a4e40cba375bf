"""Attention visualization: heatmaps, attention rollout, word-piece merging and a
self-contained HTML viewer.

Every function takes the attentions a model returns with ``output_attentions=True`` (one
``(B, H, T, T)`` tensor or sparse-backend weights per layer, or plain ``(H, T, T)`` arrays)
and the tokens, and returns a matplotlib ``Figure``, an array or an HTML string; nothing is
shown or written unless asked (:func:`save_figure`). matplotlib is imported only when a
figure is made.

>>> out = model(ids, mask, types, output_attentions=True)
>>> fig = attention_heatmap(out.attentions, tokens, layer=1, head=2)
>>> fig.savefig("attention.png")
"""

from lanistr.viz.html import render_html
from lanistr.viz.plots import (
    attention_grid,
    attention_heatmap,
    attention_heatmaps,
    heads_heatmap,
    rollout_figure,
    save_figure,
)
from lanistr.viz.weights import (
    BandAttention,
    DenseAttention,
    LayerAttention,
    as_layers,
    merge_word_pieces,
    rollout,
    rollout_rows,
    word_groups,
)

__all__ = [
    "BandAttention",
    "DenseAttention",
    "LayerAttention",
    "as_layers",
    "attention_grid",
    "attention_heatmap",
    "attention_heatmaps",
    "heads_heatmap",
    "merge_word_pieces",
    "render_html",
    "rollout",
    "rollout_figure",
    "rollout_rows",
    "save_figure",
    "word_groups",
]
