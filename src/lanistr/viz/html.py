"""A self-contained HTML attention viewer: one file, inline CSS and JS, no network.

The page shows, for the layer and head chosen in the selectors (or ``#layer=1&head=2`` in
the URL), the token x token matrix, the heads x tokens view of one query token, and the
attention rollout. Hovering a token colours what it attends to (orange) and what attends to
it (blue underline); clicking it makes it the query of the heads and rollout views.

Weights are rounded to 8 bits to keep the file small: per head, ``value = lo + q * step`` with
``q`` in 0..254 (``lo`` = 0 unless a weight is negative, ``step`` = 1/254 of the head's
range, so the colours are exact), stored as base64 bytes; 255 marks a cell the backend never
computed (outside a band, outside the LSH buckets), drawn grey. A sliding-window layer is
stored as its band (``n x (2w+1)``, plus the columns and rows of its global tokens) when that
is smaller than the square. At most ``max_tokens`` tokens are stored: a longer input shows a
window of it (the page says which).
"""

from __future__ import annotations

import base64
import html as _html
import json
from collections.abc import Sequence

import numpy as np

from lanistr.viz.plots import check_window
from lanistr.viz.weights import BandAttention, LayerAttention, as_layers, rollout_rows

MAX_TOKENS = 256


NOT_COMPUTED = 255
LEVELS = 254


def quantize(x: np.ndarray) -> tuple[float, float]:
    """``(lo, step)`` that map the finite values of ``x`` onto 0..254."""
    finite = x[np.isfinite(x)]
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    return lo, ((hi - lo) / LEVELS if hi > lo else 1.0)


def _bytes(x: np.ndarray, lo: float, step: float) -> str:
    """Base64 of ``round((x - lo) / step)`` as bytes, 255 where NaN."""
    q = np.rint((np.nan_to_num(np.asarray(x, dtype=np.float64), nan=lo) - lo) / step)
    q = np.clip(q, 0, LEVELS).astype(np.uint8)
    q[np.isnan(x)] = NOT_COMPUTED
    return base64.b64encode(q.tobytes()).decode("ascii")


def _dense_payload(square: np.ndarray) -> list[dict]:
    out = []
    for m in square:
        lo, step = quantize(m)
        out.append({"form": "dense", "lo": lo, "step": step, "v": _bytes(m, lo, step)})
    return out


def _head_payload(layer: LayerAttention, start: int, stop: int) -> list[dict]:
    """Per head: the dense square of tokens ``[start, stop)``, or for a sliding-window layer
    (when smaller) its band ``(n, 2w+1)`` plus the global tokens' columns and rows."""
    n = stop - start
    square = layer.window(start, stop)  # (H, n, n), NaN where not computed
    if not isinstance(layer, BandAttention):
        return _dense_payload(square)
    w = layer.w
    gpos = layer.gpos[(layer.gpos >= start) & (layer.gpos < stop)] - start  # in the window
    if n * (2 * w + 1) + 2 * n * len(gpos) >= n * n:
        return _dense_payload(square)
    rows = np.arange(n)[:, None]
    keys = rows + np.arange(2 * w + 1)[None, :] - w  # (n, 2w+1)
    inside = (keys >= 0) & (keys < n)
    band = np.full((layer.num_heads, n, 2 * w + 1), np.nan, dtype=np.float32)
    band[:, inside] = square[:, np.broadcast_to(rows, keys.shape)[inside], keys[inside]]
    band[:, gpos] = np.nan  # a global token's row is sent whole
    cols = square[:, :, gpos].copy()  # (H, n, G)
    cols[:, np.abs(gpos[None, :] - rows) <= w] = np.nan  # already in the band
    cols[:, gpos] = np.nan
    grows = square[:, gpos, :]  # (H, G, n)
    out = []
    for h in range(layer.num_heads):
        lo, step = quantize(square[h])
        out.append({"form": "band", "lo": lo, "step": step, "w": w, "g": gpos.tolist(),
                    "v": _bytes(band[h], lo, step), "gc": _bytes(cols[h], lo, step),
                    "gr": _bytes(grows[h], lo, step)})
    return out


def attention_payload(attentions, tokens: Sequence[str], *, index: int = 0, query: int = 0,
                      rollout: bool = True, residual: bool = True,
                      window: tuple[int, int] | None = None, max_tokens: int = MAX_TOKENS,
                      title: str = "", notes: Sequence[str] = ()) -> dict:
    """The data the page embeds (a plain dict, JSON-ready)."""
    layers = as_layers(attentions, index, len(tokens))
    t = layers[0].length
    if window is None:
        window = (0, min(t, max_tokens))
    start, stop = check_window(window, t)
    if stop - start > max_tokens:
        stop = start + max_tokens
    notes = list(notes)
    if (start, stop) != (0, t):
        notes.append(f"Showing tokens {start}–{stop - 1} of {t}; weights on tokens outside "
                     "this window are not drawn (rows do not sum to 1).")
    forms = {la.form for la in layers}
    if forms & {"band", "buckets"}:
        notes.append("Grey cells were never computed by the attention backend "
                     f"({', '.join(sorted(forms & {'band', 'buckets'}))}).")
    if "lowrank" in forms:
        notes.append("Linformer: the matrix is probs @ F^T, how each query mixes the values; "
                     "its entries are not probabilities (they can be negative or exceed 1).")
    if not start <= query < stop:
        query = start
    data = {
        "title": title,
        "notes": notes,
        "tokens": list(tokens[start:stop]),
        "offset": start,
        "total": t,
        "layers": len(layers),
        "heads": layers[0].num_heads,
        "query": query - start,
        "attn": [_head_payload(la, start, stop) for la in layers],
        "rollout": None,
    }
    if rollout:
        n = stop - start
        x = np.zeros((n, t))
        x[np.arange(n), np.arange(start, stop)] = 1.0
        r = rollout_rows(layers, x, residual)[:, start:stop]  # (n, n)
        lo, step = quantize(r)
        data["rollout"] = {"lo": lo, "step": step, "v": _bytes(r, lo, step)}
    return data


def render_html(attentions, tokens: Sequence[str], *, index: int = 0, title: str = "Attention",
                query: int = 0, rollout: bool = True, residual: bool = True,
                window: tuple[int, int] | None = None, max_tokens: int = MAX_TOKENS,
                notes: Sequence[str] = ()) -> str:
    """One self-contained HTML page (works offline) to explore the attentions: layer/head
    selectors, hover highlighting, heads view and rollout. Returns the HTML text."""
    data = attention_payload(attentions, tokens, index=index, query=query, rollout=rollout,
                             residual=residual, window=window, max_tokens=max_tokens,
                             title=title, notes=notes)
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    blob = blob.replace("</", "<\\/").replace("<!--", "<\\!--")  # cannot close the <script>
    return (_TEMPLATE.replace("__TITLE__", _html.escape(title))
            .replace("__DATA__", blob))


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="lanistr visualize">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fff; }
h1 { font-size: 19px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 18px 0 6px; }
.note { color: #555; font-size: 12px; margin: 2px 0; }
#error { display: none; color: #fff; background: #b00020; padding: 6px 10px; }
.controls { margin: 10px 0; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
.controls label { font-weight: 600; }
select { font-size: 14px; padding: 2px 4px; }
#tokens { line-height: 2.1; max-height: 220px; overflow: auto; border: 1px solid #ddd;
  padding: 6px; border-radius: 4px; }
.tok { padding: 2px 3px; margin: 1px; border-radius: 3px; cursor: pointer; white-space: pre;
  border-bottom: 3px solid transparent; font-family: ui-monospace, monospace; font-size: 13px; }
.tok.query { outline: 2px solid #000; }
.tok.hover { outline: 2px dashed #c05000; }
.row { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.panel { position: relative; }
.stack { position: relative; display: inline-block; line-height: 0; }
canvas { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
canvas.overlay { position: absolute; left: 0; top: 0; image-rendering: auto; }
.axis { font-size: 11px; color: #555; }
#tip { position: fixed; pointer-events: none; background: rgba(20,20,20,.9); color: #fff;
  font-size: 12px; padding: 3px 6px; border-radius: 3px; display: none; z-index: 3; }
.hrow { display: flex; align-items: flex-start; gap: 4px; }
#head-labels div { font-size: 11px; color: #444; text-align: right; white-space: nowrap;
  display: flex; align-items: center; justify-content: flex-end; }
.legend { display: flex; align-items: center; gap: 6px; font-size: 11px; color: #555; }
.legend canvas { width: 120px; height: 10px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; }
</style>
</head>
<body>
<div id="error"></div>
<h1 id="title"></h1>
<div id="notes"></div>
<div class="controls">
  <span><label for="layer">Layer</label> <select id="layer"></select></span>
  <span><label for="head">Head</label> <select id="head"></select></span>
  <span class="note">hover a token: <span class="swatch" style="background:rgba(255,120,0,.7)"></span>
    what it attends to &nbsp; <span class="swatch" style="background:rgba(0,90,220,.8)"></span> what
    attends to it &nbsp; (click a token to make it the query)</span>
</div>
<div id="tokens"></div>
<div class="row">
  <div class="panel">
    <h2 id="matrix-title">Attention</h2>
    <div class="axis">rows: query (who attends) &nbsp; columns: key (attended to)</div>
    <div class="stack"><canvas id="matrix"></canvas><canvas id="matrix-over" class="overlay"></canvas></div>
    <div class="legend"><span>0</span><canvas class="ramp"></canvas><span id="matrix-max"></span></div>
  </div>
  <div class="panel">
    <h2 id="heads-title">Heads</h2>
    <div class="axis">rows: heads &nbsp; columns: tokens</div>
    <div class="hrow"><div id="head-labels"></div>
      <div class="stack"><canvas id="heads"></canvas><canvas id="heads-over" class="overlay"></canvas></div></div>
    <div class="legend"><span>0</span><canvas class="ramp"></canvas><span id="heads-max"></span></div>
  </div>
</div>
<div id="rollout-panel">
  <h2 id="rollout-title">Attention rollout</h2>
  <div class="axis">Abnar &amp; Zuidema (2020): heads averaged, identity added, rows re-normalised,
    multiplied through the layers. Bar: contribution of each input token to the query token.</div>
  <div class="row">
    <div class="stack"><canvas id="rollout-bar"></canvas><canvas id="rollout-bar-over" class="overlay"></canvas></div>
    <div>
      <div class="stack"><canvas id="rollout"></canvas><canvas id="rollout-over" class="overlay"></canvas></div>
      <div class="legend"><span>0</span><canvas class="ramp"></canvas><span id="rollout-max"></span></div>
    </div>
  </div>
</div>
<div id="tip"></div>
<script id="lanistr-data" type="application/json">__DATA__</script>
<script>
"use strict";
(function () {
function fail(msg) {
  document.body.setAttribute("data-error", String(msg));
  var e = document.getElementById("error");
  e.textContent = "Error: " + msg; e.style.display = "block";
}
window.addEventListener("error", function (ev) { fail(ev.message || ev); });

var D = JSON.parse(document.getElementById("lanistr-data").textContent);
var n = D.tokens.length, L = D.layers, H = D.heads;
// viridis, 9 stops
var STOPS = [[68,1,84],[71,44,122],[59,81,139],[44,113,142],[33,144,141],[39,173,129],
             [92,200,99],[170,220,50],[253,231,37]];
var GREY = [217, 217, 217];
function color(t) {
  if (t !== t) return GREY;  // NaN: never computed
  t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  var i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i, a = STOPS[i], b = STOPS[i + 1];
  return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}

// ---- decoding: one Float32Array(n*n) per (layer, head), NaN where not computed
var cache = {};
function bytes(b64) {  // base64 -> Uint8Array
  var s = atob(b64), out = new Uint8Array(s.length);
  for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
function decode(obj) {  // byte q: value lo + q * step; 255: never computed
  var m = new Float32Array(n * n), v = bytes(obj.v), lo = obj.lo, st = obj.step, i, j, x;
  if (obj.form === "dense") {
    for (i = 0; i < n * n; i++) m[i] = v[i] === 255 ? NaN : lo + v[i] * st;
    return m;
  }
  // band: v[i*(2w+1) + (j - i + w)], then global columns gc[i*G + g], global rows gr[g*n + j]
  var w = obj.w, width = 2 * w + 1, g = obj.g, G = g.length, gc = bytes(obj.gc), gr = bytes(obj.gr);
  m.fill(NaN);
  for (i = 0; i < n; i++) for (var s = 0; s < width; s++) {
    j = i + s - w;
    if (j < 0 || j >= n) continue;
    x = v[i * width + s];
    if (x !== 255) m[i * n + j] = lo + x * st;
  }
  for (i = 0; i < n; i++) for (var c = 0; c < G; c++) {
    x = gc[i * G + c];
    if (x !== 255) m[i * n + g[c]] = lo + x * st;
  }
  for (var r = 0; r < G; r++) for (j = 0; j < n; j++) {
    x = gr[r * n + j];
    m[g[r] * n + j] = x === 255 ? NaN : lo + x * st;
  }
  return m;
}
function matrix(layer, head) {
  var key = layer + ":" + head;
  if (cache[key]) return cache[key];
  var m;
  if (head === "mean") {
    m = new Float32Array(n * n);
    var parts = [];
    for (var h = 0; h < H; h++) parts.push(matrix(layer, h));
    for (var i = 0; i < n * n; i++) {
      var sum = 0, k = 0;
      for (var p = 0; p < H; p++) { var x = parts[p][i]; if (x === x) { sum += x; k++; } }
      m[i] = k ? sum / k : NaN;
    }
  } else {
    m = decode(D.attn[layer][head]);
  }
  return (cache[key] = m);
}
var roll = null;
if (D.rollout) roll = decode({form: "dense", lo: D.rollout.lo, step: D.rollout.step, v: D.rollout.v});

function maxOf(a) { var m = 0; for (var i = 0; i < a.length; i++) if (a[i] > m) m = a[i]; return m || 1; }
function fmt(x) { return x === x ? (x === 0 ? "0" : x.toPrecision(3)) : "not computed"; }

// ---- state, URL hash
var state = { layer: 0, head: 0, query: D.query, hover: -1 };
function readHash() {
  var h = location.hash.replace(/^#/, "");
  h.split("&").forEach(function (kv) {
    var p = kv.split("="), k = p[0], val = decodeURIComponent(p[1] || "");
    if (k === "layer" && +val >= 0 && +val < L) state.layer = +val;
    if (k === "head") { if (val === "mean") state.head = "mean"; else if (+val >= 0 && +val < H) state.head = +val; }
    if (k === "query" && +val - D.offset >= 0 && +val - D.offset < n) state.query = +val - D.offset;
  });
}
function writeHash() {
  var h = "#layer=" + state.layer + "&head=" + state.head + "&query=" + (state.query + D.offset);
  if (location.hash !== h) history.replaceState(null, "", h);
}

// ---- drawing
var CELL = Math.max(1, Math.min(16, Math.floor(560 / Math.max(n, 1))));
function paint(canvas, rows, cols, get, vmax, cssW, cssH) {
  canvas.width = cols; canvas.height = rows;
  canvas.style.width = (cssW || cols * CELL) + "px"; canvas.style.height = (cssH || rows * CELL) + "px";
  var ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows), d = img.data;
  for (var i = 0; i < rows; i++) for (var j = 0; j < cols; j++) {
    var c = color(get(i, j) / vmax), o = 4 * (i * cols + j);
    d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  var over = document.getElementById(canvas.id + "-over");
  if (over) {
    over.width = parseFloat(canvas.style.width); over.height = parseFloat(canvas.style.height);
    over.style.width = canvas.style.width; over.style.height = canvas.style.height;
  }
}
function outline(id, rects) {
  var over = document.getElementById(id + "-over"), ctx = over.getContext("2d");
  ctx.clearRect(0, 0, over.width, over.height);
  ctx.lineWidth = 1.5;
  rects.forEach(function (r) { ctx.strokeStyle = r[4]; ctx.strokeRect(r[0] + .5, r[1] + .5, r[2] - 1, r[3] - 1); });
}
function ramps() {
  var cs = document.querySelectorAll("canvas.ramp");
  for (var k = 0; k < cs.length; k++) {
    var c = cs[k]; c.width = 120; c.height = 1;
    var ctx = c.getContext("2d"), img = ctx.createImageData(120, 1);
    for (var x = 0; x < 120; x++) { var col = color(x / 119); img.data.set([col[0], col[1], col[2], 255], 4 * x); }
    ctx.putImageData(img, 0, 0);
  }
}

var spans = [];
function buildTokens() {
  var box = document.getElementById("tokens");
  D.tokens.forEach(function (t, i) {
    var s = document.createElement("span");
    s.className = "tok"; s.textContent = t; s.title = (i + D.offset) + ": " + t;
    s.addEventListener("mouseenter", function () { state.hover = i; highlight(); });
    s.addEventListener("mouseleave", function () { state.hover = -1; highlight(); });
    s.addEventListener("click", function () { state.query = i; writeHash(); draw(); });
    box.appendChild(s); spans.push(s);
  });
}
function headLabel() { return state.head === "mean" ? "mean of heads" : "head " + state.head; }
function tokName(i) { return (i + D.offset) + " " + JSON.stringify(D.tokens[i]); }

function highlight() {
  var m = matrix(state.layer, state.head), i = state.hover, k;
  var focus = i >= 0 ? i : state.query;
  var rowMax = 0, colMax = 0;
  for (k = 0; k < n; k++) {
    if (m[focus * n + k] > rowMax) rowMax = m[focus * n + k];
    if (m[k * n + focus] > colMax) colMax = m[k * n + focus];
  }
  for (k = 0; k < n; k++) {
    var a = m[focus * n + k], b = m[k * n + focus];
    spans[k].style.backgroundColor = a > 0 ? "rgba(255,120,0," + (0.85 * a / (rowMax || 1)).toFixed(3) + ")" : "";
    spans[k].style.borderBottomColor = b > 0 ? "rgba(0,90,220," + (b / (colMax || 1)).toFixed(3) + ")" : "transparent";
    spans[k].classList.toggle("query", k === state.query);
    spans[k].classList.toggle("hover", k === i);
  }
  outline("matrix", [[0, focus * CELL, n * CELL, CELL, "#ff7800"], [focus * CELL, 0, CELL, n * CELL, "#005adc"]]);
  var hc = Math.max(CELL, 12);
  outline("heads", [[focus * CELL, 0, CELL, H * hc, "#ff7800"]]);
  if (roll) {
    outline("rollout", [[0, state.query * CELL, n * CELL, CELL, "#ff7800"]]);
  }
}

function draw() {
  document.getElementById("layer").value = state.layer;
  document.getElementById("head").value = state.head;
  var m = matrix(state.layer, state.head), vmax = maxOf(m);
  paint(document.getElementById("matrix"), n, n, function (i, j) { return m[i * n + j]; }, vmax);
  document.getElementById("matrix-title").textContent = "Layer " + state.layer + ", " + headLabel();
  document.getElementById("matrix-max").textContent = fmt(vmax);
  // heads x tokens for the query token
  var q = state.query, heads = [], hmax = 0;
  for (var h = 0; h < H; h++) {
    var mh = matrix(state.layer, h);
    for (var j = 0; j < n; j++) if (mh[q * n + j] > hmax) hmax = mh[q * n + j];
    heads.push(mh);
  }
  var hc = Math.max(CELL, 12);
  paint(document.getElementById("heads"), H, n, function (i, j) { return heads[i][q * n + j]; }, hmax || 1,
        n * CELL, H * hc);
  var hl = document.getElementById("head-labels");
  hl.innerHTML = "";
  for (var r = 0; r < H; r++) {
    var lab = document.createElement("div");
    lab.textContent = "Head " + r; lab.style.height = hc + "px";
    lab.style.fontSize = Math.min(11, hc - 1) + "px";
    hl.appendChild(lab);
  }
  document.getElementById("heads-title").textContent = "Layer " + state.layer + ": every head, from query " + tokName(q);
  document.getElementById("heads-max").textContent = fmt(hmax);
  if (roll) {
    var rmax = maxOf(roll);
    paint(document.getElementById("rollout"), n, n, function (i, j) { return roll[i * n + j]; }, rmax);
    document.getElementById("rollout-max").textContent = fmt(rmax);
    drawBar(q);
    document.getElementById("rollout-title").textContent = "Attention rollout, query " + tokName(q);
  }
  highlight();
}
function drawBar(q) {
  var c = document.getElementById("rollout-bar"), W = Math.max(n * CELL, 240), Hh = 160;
  c.width = W; c.height = Hh; c.style.width = W + "px"; c.style.height = Hh + "px";
  var over = document.getElementById("rollout-bar-over");
  over.width = W; over.height = Hh; over.style.width = W + "px"; over.style.height = Hh + "px";
  var ctx = c.getContext("2d"), bmax = 0, j;
  for (j = 0; j < n; j++) bmax = Math.max(bmax, roll[q * n + j]);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, Hh);
  ctx.fillStyle = "#3b6ea8";
  var bw = W / n;
  for (j = 0; j < n; j++) {
    var hgt = (Hh - 4) * roll[q * n + j] / (bmax || 1);
    ctx.fillRect(j * bw + (bw > 3 ? 0.5 : 0), Hh - hgt, Math.max(1, bw - (bw > 3 ? 1 : 0)), hgt);
  }
  ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(0, Hh - .5); ctx.lineTo(W, Hh - .5); ctx.stroke();
}

// ---- hover tooltips on the canvases
var tip = document.getElementById("tip");
function showTip(ev, text) { tip.textContent = text; tip.style.display = "block";
  tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px"; }
function hideTip() { tip.style.display = "none"; }
function cellAt(ev, canvas, rows, cols) {
  var r = canvas.getBoundingClientRect();
  var i = Math.floor((ev.clientY - r.top) / r.height * rows), j = Math.floor((ev.clientX - r.left) / r.width * cols);
  return [Math.max(0, Math.min(rows - 1, i)), Math.max(0, Math.min(cols - 1, j))];
}
function hover(id, rows, cols, text, onCell) {
  var over = document.getElementById(id + "-over");
  over.addEventListener("mousemove", function (ev) {
    var c = cellAt(ev, over, rows(), cols()); showTip(ev, text(c[0], c[1])); if (onCell) onCell(c[0], c[1]);
  });
  over.addEventListener("mouseleave", function () { hideTip(); state.hover = -1; highlight(); });
}
function one() { return n; }
hover("matrix", one, one, function (i, j) {
  return tokName(i) + " \u2192 " + tokName(j) + ": " + fmt(matrix(state.layer, state.head)[i * n + j]);
}, function (i) { state.hover = i; highlight(); });
hover("heads", function () { return H; }, one, function (h, j) {
  return "head " + h + ": " + tokName(state.query) + " \u2192 " + tokName(j) + ": " + fmt(matrix(state.layer, h)[state.query * n + j]);
});
if (roll) {
  hover("rollout", one, one, function (i, j) { return "rollout " + tokName(i) + " \u2190 " + tokName(j) + ": " + fmt(roll[i * n + j]); });
  hover("rollout-bar", function () { return 1; }, one, function (i, j) {
    return tokName(j) + " \u2192 " + tokName(state.query) + ": " + fmt(roll[state.query * n + j]); });
}

// ---- init
document.getElementById("title").textContent = D.title;
var notes = document.getElementById("notes");
D.notes.forEach(function (t) { var p = document.createElement("div"); p.className = "note"; p.textContent = t; notes.appendChild(p); });
var ls = document.getElementById("layer"), hs = document.getElementById("head");
for (var l = 0; l < L; l++) ls.add(new Option(String(l), String(l)));
for (var h2 = 0; h2 < H; h2++) hs.add(new Option(String(h2), String(h2)));
hs.add(new Option("mean", "mean"));
ls.addEventListener("change", function () { state.layer = +ls.value; writeHash(); draw(); });
hs.addEventListener("change", function () { state.head = hs.value === "mean" ? "mean" : +hs.value; writeHash(); draw(); });
window.addEventListener("hashchange", function () { readHash(); draw(); });
if (!roll) document.getElementById("rollout-panel").style.display = "none";
readHash();
ramps();
buildTokens();
draw();
document.body.setAttribute("data-status", "ready");
})();
</script>
</body>
</html>
"""
