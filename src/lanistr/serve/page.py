"""The page ``lanistr serve`` answers at ``/``: type a text, see the model's prediction and
its attention heads.

The page holds no viewer of its own: it asks ``POST /v1/attention`` with ``"format":
"viewer"`` and shows the answer's ``html`` (the self-contained page of
:func:`lanistr.viz.render_html`, the one ``lanistr visualize --html`` writes) in an iframe,
and the answer's ``prediction`` above it. The body gets ``data-status="ready"`` when the
viewer has drawn, or ``data-error`` with the reason.
"""

from __future__ import annotations

import html as _html


def render_page(title: str) -> str:
    return _PAGE.replace("__TITLE__", _html.escape(title))


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fff; }
h1 { font-size: 19px; margin: 0 0 4px; }
#info { color: #555; font-size: 12px; margin-bottom: 10px; }
form { display: flex; gap: 8px; align-items: flex-start; }
textarea { flex: 1; font: 14px/1.4 ui-monospace, monospace; min-height: 3.2em; padding: 6px; }
button { font-size: 14px; padding: 6px 14px; }
#error { display: none; color: #fff; background: #b00020; padding: 6px 10px; margin: 8px 0; }
#prediction { margin: 10px 0; min-height: 1.4em; }
.bar { display: flex; align-items: center; gap: 6px; font-size: 12px; }
.bar span.fill { display: inline-block; height: 10px; background: #3b6ea8; }
.tagged span { display: inline-block; margin: 2px 4px 2px 0; padding: 1px 4px; border: 1px solid #ccc;
  border-radius: 3px; font-family: ui-monospace, monospace; }
.tagged sub { color: #a04000; }
#viewer { width: 100%; height: 1150px; border: 1px solid #ddd; border-radius: 4px; display: none; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="info">loading /v1/info…</div>
<form id="form">
  <textarea id="text" placeholder="Type a text and press Analyse (Ctrl+Enter)"></textarea>
  <button id="go" type="submit">Analyse</button>
</form>
<div id="error"></div>
<div id="prediction"></div>
<iframe id="viewer" title="attention viewer"></iframe>
<script>
"use strict";
(function () {
var $ = function (id) { return document.getElementById(id); };
function fail(msg) {
  document.body.setAttribute("data-error", String(msg));
  document.body.setAttribute("data-status", "error");
  $("error").textContent = "Error: " + msg; $("error").style.display = "block";
}
function clearError() {
  document.body.removeAttribute("data-error");
  $("error").style.display = "none";
}
function json(response) {
  return response.json().then(function (body) {
    if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
    return body;
  });
}
fetch("/v1/info").then(json).then(function (d) {
  var parts = [d.model, "task: " + d.task, "max_len " + d.max_len, "runtime " + d.runtime,
               d.layers + " layers x " + d.heads + " heads"];
  if (d.labels && d.labels.length) parts.push("labels: " + d.labels.join(", "));
  $("info").textContent = parts.join(" · ");
}).catch(function (e) { fail("/v1/info: " + e.message); });

function showPrediction(p) {
  var box = $("prediction");
  box.innerHTML = "";
  if (!p) return;
  if (p.label !== undefined) {
    var head = document.createElement("div");
    head.innerHTML = "Predicted: <b></b> (p = <span></span>)";
    head.querySelector("b").textContent = p.label;
    head.querySelector("span").textContent = p.score.toFixed(3);
    box.appendChild(head);
    Object.keys(p.probabilities).forEach(function (name) {
      var row = document.createElement("div"), fill = document.createElement("span"), lab = document.createElement("span");
      row.className = "bar"; fill.className = "fill";
      fill.style.width = Math.round(200 * p.probabilities[name]) + "px";
      lab.textContent = name + " " + p.probabilities[name].toFixed(3);
      row.appendChild(fill); row.appendChild(lab); box.appendChild(row);
    });
  } else if (p.words) {
    var tagged = document.createElement("div");
    tagged.className = "tagged";
    p.words.forEach(function (w, i) {
      var s = document.createElement("span"), t = document.createElement("sub");
      s.textContent = w; t.textContent = p.tags[i]; s.appendChild(t); tagged.appendChild(s);
    });
    box.appendChild(tagged);
  }
}

var frame = $("viewer");
frame.addEventListener("load", function () {
  if (!frame.getAttribute("srcdoc")) return;
  var body = frame.contentDocument && frame.contentDocument.body;
  var err = body && body.getAttribute("data-error");
  if (err) { fail("viewer: " + err); return; }
  document.body.setAttribute("data-status", "ready");
});

function analyse(ev) {
  if (ev) ev.preventDefault();
  var text = $("text").value;
  if (!text.trim()) { fail("type a text first"); return; }
  clearError();
  document.body.setAttribute("data-status", "busy");
  $("go").disabled = true;
  fetch("/v1/attention", {method: "POST", headers: {"content-type": "application/json"},
                          body: JSON.stringify({text: text, format: "viewer"})})
    .then(json).then(function (d) {
      showPrediction(d.prediction);
      frame.style.display = "block";
      frame.srcdoc = d.html;
    }).catch(function (e) { fail(e.message); })
    .then(function () { $("go").disabled = false; });
}
$("form").addEventListener("submit", analyse);
$("text").addEventListener("keydown", function (ev) {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) analyse(ev);
});
document.body.setAttribute("data-status", "idle");
})();
</script>
</body>
</html>
"""
