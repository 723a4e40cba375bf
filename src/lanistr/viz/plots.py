"""Attention figures (matplotlib, no pyplot: each function returns a ``Figure``).

Long inputs stay readable and fast: beyond ``max_cells`` tokens a matrix is aggregated into
at most ``max_cells`` blocks (attention summed over a key block, averaged over a query
block, so rows keep their sums), or shown at token resolution for a ``window=(start, stop)``.
Tick labels are thinned to what fits at the chosen font size, images are drawn with
``imshow(interpolation="nearest")`` and saved at 100 dpi. Cells a sparse backend never
computed (outside a sliding window) are grey, not zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lanistr.errors import LanistrError
from lanistr.viz.weights import LayerAttention, as_layers, block_starts, rollout_rows

DPI = 100
MAX_CELLS = 160  # token resolution up to this many tokens, blocks beyond
CMAP = "viridis"
NOT_COMPUTED = "#d9d9d9"


@dataclass
class Units:
    """What one matrix axis shows: tokens ``[start, stop)`` or blocks starting at ``starts``."""

    start: int
    stop: int
    starts: np.ndarray | None  # None: one cell per token
    labels: list[str]
    axis_name: str

    @property
    def max_labels(self) -> int:
        """Every token can be labelled (if the font fits); blocks get a label every few."""
        return 10**6 if self.starts is None else 32

    @property
    def size(self) -> int:
        return len(self.labels)


def choose_units(tokens: Sequence[str], window: tuple[int, int] | None = None,
                 max_cells: int = MAX_CELLS, unit: str = "token") -> Units:
    """Token resolution for a window or a short input; blocks for a long one. ``unit`` names
    what ``tokens`` are ("token", "word") in the axis labels."""
    t = len(tokens)
    if window is not None:
        start, stop = check_window(window, t)
        return Units(start, stop, None, [_short(tokens[i]) for i in range(start, stop)], unit)
    if t <= max_cells:
        return Units(0, t, None, [_short(tok) for tok in tokens], unit)
    starts = block_starts(t, max_cells)
    size = int(starts[1] - starts[0])
    labels = [f"{s} {_short(tokens[s], 8)}" for s in starts]
    return Units(0, t, starts, labels, f"blocks of {size} {unit}s, first shown")


def check_window(window: tuple[int, int], length: int) -> tuple[int, int]:
    start, stop = int(window[0]), int(window[1])
    if not 0 <= start < stop <= length:
        raise LanistrError(f"window {start}:{stop} is not inside the {length} tokens "
                           f"(need 0 <= start < stop <= {length})")
    return start, stop


def _short(token: str, limit: int = 14) -> str:
    token = token.replace("\n", " ")
    return token if len(token) <= limit else token[:limit - 1] + "…"


def _cached_aggregate(layer: LayerAttention, starts: np.ndarray) -> LayerAttention:
    """``layer.aggregate(starts)``, computed once per layer (each head's figure reuses it)."""
    cache = layer.__dict__.setdefault("_aggregates", {})
    key = (len(starts), int(starts[-1]))
    if key not in cache:
        cache[key] = layer.aggregate(starts)
    return cache[key]


def layer_matrix(layer: LayerAttention, units: Units) -> np.ndarray:
    """``(H, n, n)`` matrices of ``layer`` in ``units``; NaN where not computed."""
    if units.starts is None:
        return layer.window(units.start, units.stop)
    agg = _cached_aggregate(layer, units.starts)
    return agg.window(0, agg.length)


def query_rows(layer: LayerAttention, query: int, units: Units) -> np.ndarray:
    """``(H, n)``: what token ``query`` attends to, keys in ``units`` (summed over a block)."""
    rows = layer.rows(query)  # (H, T)
    if units.starts is None:
        return rows[:, units.start:units.stop]
    return _nan_reduceat(rows, units.starts)


def _nan_reduceat(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum over the key blocks of the last axis; NaN where a block has no computed cell."""
    summed = np.add.reduceat(np.nan_to_num(x, nan=0.0), starts, axis=-1)
    seen = np.add.reduceat((~np.isnan(x)).astype(np.int32), starts, axis=-1)
    return np.where(seen > 0, summed, np.nan)


# ------------------------------------------------------------------------------------------
# layout helpers


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def _cmap(name: str = CMAP):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=NOT_COMPUTED)


def _vmin(m: np.ndarray) -> float:
    """0, or the smallest value when there are negative ones (Linformer mixing weights)."""
    finite = m[np.isfinite(m)]
    return min(0.0, float(finite.min())) if finite.size else 0.0


def _vmax(m: np.ndarray) -> float:
    finite = m[np.isfinite(m)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _font_and_step(n: int, inches: float, max_labels: int = 10**6, largest: float = 10.0,
                   smallest: float = 6.0):
    """Font size (points) and label step so that ``n`` labels fit along ``inches``. At most
    ``max_labels`` ticks are drawn: tick artists, not pixels, dominate the drawing time."""
    per_cell = inches * 72.0 / max(n, 1)  # points per cell
    step = max(1, math.ceil(smallest / (per_cell * 0.85)), math.ceil(n / max_labels))
    return max(smallest, min(largest, per_cell * step * 0.85)), step


def _set_ticks(ax, axis: str, labels: Sequence[str], inches: float,
               max_labels: int = 10**6) -> float:
    """Put (a thinned subset of) ``labels`` on ``axis``; return the label font size."""
    size, step = _font_and_step(len(labels), inches, max_labels)
    positions = list(range(0, len(labels), step))
    shown = [labels[i] for i in positions]
    if axis == "x":
        ax.set_xticks(positions)
        rotation = 90 if len(labels) > 8 or max(map(len, labels), default=0) > 6 else 0
        ax.set_xticklabels(shown, fontsize=size, rotation=rotation)
    else:
        ax.set_yticks(positions)
        ax.set_yticklabels(shown, fontsize=size)
    ax.tick_params(length=2, pad=1)
    return size


def _label_inches(labels: Sequence[str], fontsize: float) -> float:
    """Rough width of the longest label."""
    return max(map(len, labels), default=1) * fontsize * 0.62 / 72.0 + 0.1


def _axis_inches(units: Units) -> float:
    """Axis length: 0.1 inch per token (7 points: every label fits at 6 points) up to 16
    inches for token views, so 160 tokens are all labelled; blocks get 11 inches."""
    n = units.size
    if units.starts is None:
        return min(16.0, max(3.0, n * 0.1))
    return min(11.0, max(3.0, n * 0.085))


def _title(fig, title: str | None, height: float) -> None:
    """A title 0.12 inch below the top edge of a figure ``height`` inches tall."""
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")


# ------------------------------------------------------------------------------------------
# figures


def _matrix_figure(m: np.ndarray, row_units: Units, col_units: Units, title: str | None,
                   colorbar_label: str, xlabel: str, ylabel: str):
    """One heatmap with token labels on both axes, a colour bar and room for everything."""
    nx, ny = col_units.size, row_units.size
    ax_w, ax_h = _axis_inches(col_units), _axis_inches(row_units)
    fx, _ = _font_and_step(nx, ax_w, col_units.max_labels)
    fy, _ = _font_and_step(ny, ax_h, row_units.max_labels)
    left = _label_inches(row_units.labels, fy) + 0.45
    bottom = _label_inches(col_units.labels, fx) + 0.45
    top = 0.55 if title else 0.2
    right = 1.1  # colour bar
    width, height = left + ax_w + right, bottom + ax_h + top
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, ax_w / width, ax_h / height))
    im = ax.imshow(m, cmap=_cmap(), vmin=_vmin(m), vmax=_vmax(m), interpolation="nearest",
                   aspect="auto")
    _set_ticks(ax, "x", col_units.labels, ax_w, col_units.max_labels)
    _set_ticks(ax, "y", row_units.labels, ax_h, row_units.max_labels)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    cax = fig.add_axes(((left + ax_w + 0.15) / width, bottom / height, 0.18 / width,
                        ax_h / height))
    bar = fig.colorbar(im, cax=cax)
    bar.set_label(colorbar_label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    _title(fig, title, height)
    return fig


def _value_label(units: Units) -> str:
    return ("attention weight" if units.starts is None
            else "attention (sum over key block, mean over query block)")


def attention_heatmap(attentions, tokens: Sequence[str], layer: int = 0, head: int | None = 0,
                      *, index: int = 0, window: tuple[int, int] | None = None,
                      max_cells: int = MAX_CELLS, title: str | None = None,
                      unit: str = "token"):
    """Token x token heatmap of one (layer, head); ``head=None`` averages the heads.
    Rows are queries (who attends), columns keys (attended to)."""
    layers = as_layers(attentions, index, len(tokens))
    la = _pick(layers, layer, head)
    units = choose_units(tokens, window, max_cells, unit)
    m = layer_matrix(la, units)
    m = np.nanmean(m, axis=0) if head is None else m[head]
    if title is None:
        title = f"Layer {layer}, " + ("mean of heads" if head is None else f"head {head}")
    return _matrix_figure(m, units, units, title, _value_label(units),
                          f"key ({units.axis_name})", f"query ({units.axis_name})")


def attention_heatmaps(attentions, tokens: Sequence[str], layer: int, heads: Sequence[int],
                       *, index: int = 0, window: tuple[int, int] | None = None,
                       max_cells: int = MAX_CELLS, title: str = "Layer {layer}, head {head}",
                       unit: str = "token"):
    """Yield ``(head, figure)`` for several heads of one layer, like :func:`attention_heatmap`
    but drawing the axes and labels once: the *same* figure is redrawn with each head's
    weights (save it before taking the next one). ``title`` may use ``{layer}``/``{head}``."""
    layers = as_layers(attentions, index, len(tokens))
    for h in heads:
        _pick(layers, layer, h)
    units = choose_units(tokens, window, max_cells, unit)
    mats = layer_matrix(layers[layer], units)  # (H, n, n)
    fig = None
    for h in heads:
        m = mats[h]
        text = title.format(layer=layer, head=h)
        if fig is None:
            fig = _matrix_figure(m, units, units, text, _value_label(units),
                                 f"key ({units.axis_name})", f"query ({units.axis_name})")
        else:
            im = fig.axes[0].images[0]
            im.set_data(m)
            im.set_clim(_vmin(m), _vmax(m))  # the colour bar follows
            _title(fig, text, fig.get_figheight())
        yield h, fig


def heads_heatmap(attentions, tokens: Sequence[str], layer: int = 0, *, query: int = 0,
                  index: int = 0, window: tuple[int, int] | None = None,
                  max_cells: int = MAX_CELLS, title: str | None = None, unit: str = "token"):
    """The design's view: for one layer, heads x tokens, the attention each head pays from
    token ``query`` (default the first, ``[CLS]``) to every token."""
    layers = as_layers(attentions, index, len(tokens))
    la = _pick(layers, layer, 0)
    if not 0 <= query < len(tokens):
        raise LanistrError(f"query {unit} {query} is outside the {len(tokens)} {unit}s")
    units = choose_units(tokens, window, max_cells, unit)
    m = query_rows(la, query, units)  # (H, n)
    heads = Units(0, la.num_heads, None, [f"Head {h}" for h in range(la.num_heads)], "head")
    if title is None:
        title = f"Layer {layer}: attention from {unit} {query} {tokens[query]!r}"
    fig = _matrix_figure(m, heads, units, title,
                         "attention weight" if units.starts is None
                         else "attention (sum over key block)",
                         f"key ({units.axis_name})", "")
    return fig


def attention_grid(attentions, tokens: Sequence[str] | None = None, *, index: int = 0,
                   max_cells: int = 64, title: str | None = None, unit: str = "token"):
    """All layers x heads as thumbnails on one shared colour scale (token x token, or
    blocks for a long input)."""
    layers = as_layers(attentions, index, None if tokens is None else len(tokens))
    t = layers[0].length
    tokens = list(tokens) if tokens is not None else [str(i) for i in range(t)]
    units = choose_units(tokens, None, max_cells, unit)
    mats = [layer_matrix(la, units) for la in layers]  # L x (H, n, n)
    vmin, vmax = min(_vmin(m) for m in mats), max(_vmax(m) for m in mats)
    n_layers, n_heads = len(layers), layers[0].num_heads
    cell = 1.3 if n_layers * n_heads <= 64 else 0.9
    left, top, bottom, right = 0.55, (0.75 if title else 0.35), 0.25, 1.0
    width = left + n_heads * cell + right
    height = top + n_layers * cell + bottom
    fig = _figure(width, height)
    cmap = _cmap()
    gap = 0.08
    im = None
    for li, m in enumerate(mats):
        for h in range(n_heads):
            x0 = left + h * cell
            y0 = height - top - (li + 1) * cell
            ax = fig.add_axes((x0 / width, y0 / height, (cell - gap) / width, (cell - gap) / height))
            im = ax.imshow(m[h], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                           aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if li == 0:
                ax.set_title(f"Head {h}", fontsize=8, pad=2)
            if h == 0:
                ax.set_ylabel(f"Layer {li}", fontsize=8)
    cax = fig.add_axes(((left + n_heads * cell + 0.1) / width, bottom / height, 0.15 / width,
                        (n_layers * cell - gap) / height))
    bar = fig.colorbar(im, cax=cax)
    bar.set_label(_value_label(units), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    _title(fig, title or f"All layers x heads ({t} {unit}s"
           + (")" if units.starts is None else f", {units.axis_name})"), height)
    return fig


def rollout_view(layers: Sequence[LayerAttention], units: Units, query: int,
                 residual: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The rollout row of ``query`` ``(n,)`` and the rollout matrix ``(n, n)`` in ``units``,
    computed through the layers without forming a ``T x T`` matrix for blocks."""
    t = layers[0].length
    e = np.zeros((1, t))
    e[0, query] = 1.0
    row = rollout_rows(layers, e, residual)[0]
    if units.starts is None:
        x = np.zeros((units.stop - units.start, t))
        x[np.arange(units.stop - units.start), np.arange(units.start, units.stop)] = 1.0
        matrix = rollout_rows(layers, x, residual)[:, units.start:units.stop]
        return row[units.start:units.stop], matrix
    starts = units.starts
    counts = np.diff(np.append(starts, t))
    group = np.repeat(np.arange(len(starts)), counts)
    x = np.zeros((len(starts), t))
    x[group, np.arange(t)] = 1.0 / counts[group]  # block averages of the query rows
    matrix = np.add.reduceat(rollout_rows(layers, x, residual), starts, axis=1)
    return np.add.reduceat(row, starts), matrix


def rollout_figure(attentions, tokens: Sequence[str], *, query: int = 0, index: int = 0,
                   residual: bool = True, window: tuple[int, int] | None = None,
                   max_cells: int = MAX_CELLS, title: str | None = None, unit: str = "token"):
    """Attention rollout (Abnar & Zuidema 2020): a bar over tokens of what the final
    representation of ``query`` draws from each input token, and the rollout matrix."""
    layers = as_layers(attentions, index, len(tokens))
    if not 0 <= query < len(tokens):
        raise LanistrError(f"query {unit} {query} is outside the {len(tokens)} {unit}s")
    units = choose_units(tokens, window, max_cells, unit)
    row, matrix = rollout_view(layers, units, query, residual)
    n = units.size
    ax_w = _axis_inches(units)
    fx, _ = _font_and_step(n, ax_w, units.max_labels)
    left = _label_inches(units.labels, fx) + 0.45
    below = _label_inches(units.labels, fx) + 0.45
    bar_h, gap, top, right = 1.6, below + 0.25, 0.6, 1.1
    width = left + ax_w + right
    height = below + ax_w + gap + bar_h + top
    fig = _figure(width, height)
    bar_ax = fig.add_axes((left / width, (below + ax_w + gap) / height, ax_w / width,
                           bar_h / height))
    bar_ax.bar(np.arange(n), row, width=0.9, color="#3b6ea8")
    bar_ax.set_xlim(-0.5, n - 0.5)
    bar_ax.set_ylabel("rollout", fontsize=9)
    bar_ax.tick_params(labelsize=8)
    _set_ticks(bar_ax, "x", units.labels, ax_w, units.max_labels)
    bar_ax.set_title(f"contribution of each input {unit} to {unit} {query} {tokens[query]!r}"
                     + ("" if units.starts is None else " (summed over blocks)"), fontsize=9)
    ax = fig.add_axes((left / width, below / height, ax_w / width, ax_w / height))
    im = ax.imshow(matrix, cmap=_cmap(), vmin=_vmin(matrix), vmax=_vmax(matrix), interpolation="nearest",
                   aspect="auto")
    _set_ticks(ax, "x", units.labels, ax_w, units.max_labels)
    _set_ticks(ax, "y", units.labels, ax_w, units.max_labels)
    ax.set_xlabel(f"input ({units.axis_name})", fontsize=9)
    ax.set_ylabel(f"position after the last layer ({units.axis_name})", fontsize=9)
    cax = fig.add_axes(((left + ax_w + 0.15) / width, below / height, 0.18 / width, ax_w / height))
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("rollout", fontsize=9)
    cb.ax.tick_params(labelsize=8)
    _title(fig, title or f"Attention rollout ({len(layers)} layers, heads averaged)", height)
    return fig


def _pick(layers: Sequence[LayerAttention], layer: int, head: int | None) -> LayerAttention:
    if not 0 <= layer < len(layers):
        raise LanistrError(f"layer {layer} does not exist (the model has {len(layers)}: "
                           f"0..{len(layers) - 1})")
    la = layers[layer]
    if head is not None and not 0 <= head < la.num_heads:
        raise LanistrError(f"head {head} does not exist (the model has {la.num_heads}: "
                           f"0..{la.num_heads - 1})")
    return la


def save_figure(fig, path, dpi: int = DPI) -> None:
    """Write ``fig`` as a PNG, atomically."""
    from lanistr.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
