"""``lanistr visualize``: attention heatmaps, rollout and an HTML viewer for one input."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lanistr.commands import (
    add_model_args,
    model_overrides,
    non_negative_int,
    positive_int,
    resolve_device,
)
from lanistr.errors import ConfigError, LanistrError

EPILOG = """\
files written to --output:
  heads_LXX.png           per layer: the attention every head pays from the query token
  attention_LXX_HYY.png   per (layer, head): token x token heatmap (rows attend to columns)
  grid.png                all layers x heads as thumbnails
  rollout.png             with --rollout: attention rollout (bar for the query token + matrix)
  attention.html          with --html: one self-contained page (layer/head selectors, hover)
  summary.json            tokens, prediction (classifiers) and the list of files

Inputs longer than --max-cells tokens are drawn as blocks (sum over key tokens, mean over
query tokens); --window START:END shows a token range at full resolution instead.

example:
  lanistr visualize --model runs/sst2 --text "a gripping, funny film" --rollout --html \\
      --output viz/
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="draw the attention of a model on one text (PNG heatmaps, rollout, HTML viewer)",
        description="Run a checkpoint on one text (or text pair) with output_attentions and "
                    "draw what each layer and head attends to.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p, "checkpoint directory (config.json + model.safetensors + tokenizer)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory or file (default: the --model directory)")
    p.add_argument("--text", required=True, help="the text to encode")
    p.add_argument("--text-pair", metavar="TEXT", help="a second text ([CLS] A [SEP] B [SEP])")
    p.add_argument("--output", required=True, metavar="DIR", help="directory for the files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier visualization in --output")
    p.add_argument("--layers", nargs="+", metavar="L",
                   help="layers for the per-layer/per-head images: numbers (0-based, "
                        "negative from the end), comma or space separated, or 'all' (default)")
    p.add_argument("--heads", nargs="+", metavar="H",
                   help="heads for the per-head images, like --layers (default: all)")
    p.add_argument("--query-token", type=non_negative_int, default=0, metavar="N",
                   help="token (or word, with --words) whose attention the heads view and the "
                        "rollout bar show (default 0, [CLS])")
    p.add_argument("--words", action="store_true",
                   help="merge word pieces into words (attention summed over key pieces, "
                        "averaged over query pieces)")
    p.add_argument("--rollout", action="store_true",
                   help="also draw attention rollout (Abnar & Zuidema 2020)")
    p.add_argument("--html", action="store_true",
                   help="also write attention.html, a self-contained interactive viewer")
    p.add_argument("--max-len", type=positive_int, metavar="N",
                   help="truncate the input to N tokens (default: the model's max_len)")
    p.add_argument("--window", metavar="START:END",
                   help="show tokens START..END-1 at full resolution (long inputs)")
    p.add_argument("--max-cells", type=int, default=160, metavar="N",
                   help="beyond N tokens, draw blocks of tokens (default 160)")
    p.add_argument("--html-max-tokens", type=int, default=256, metavar="N",
                   help="tokens stored in the HTML page; a longer input shows a window "
                        "(default 256)")
    p.set_defaults(func=run)


def parse_indices(values: list[str] | None, count: int, what: str) -> list[int]:
    """``['0,2', '-1']`` -> ``[0, 2, count - 1]``; None or ``all`` -> every index."""
    if not values or [v.lower() for v in values] == ["all"]:
        return list(range(count))
    out: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                i = int(part)
            except ValueError:
                raise ConfigError(f"--{what}: {part!r} is not a number (use e.g. 0,2 or all)") from None
            if not -count <= i < count:
                raise ConfigError(f"--{what}: {i} does not exist (the model has {count}: "
                                  f"0..{count - 1})")
            i %= count
            if i not in out:
                out.append(i)
    return out


def parse_window(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return int(start), int(stop)
    except ValueError:
        raise ConfigError(f"--window {text!r}: expected START:END, e.g. 100:200") from None


def prediction(model, out) -> tuple[str, float] | None:
    """(label, probability) for a sequence classifier, else None."""
    labels = list(getattr(model.config, "labels", []) or [])
    logits = getattr(out, "logits", None)
    if not labels or logits is None or logits.ndim != 2 or logits.shape[-1] != len(labels):
        return None
    probs = logits[0].float().softmax(-1)
    best = int(probs.argmax())
    return labels[best], float(probs[best])


def run(args) -> int:
    from lanistr.io import check_output_dir

    check_output_dir(args.output, args.overwrite, owned=("summary.json",))
    window = parse_window(args.window)
    if args.max_cells < 2:
        raise ConfigError(f"--max-cells {args.max_cells} must be >= 2")
    if args.html_max_tokens < 1:
        raise ConfigError(f"--html-max-tokens {args.html_max_tokens} must be >= 1")
    summary = visualize(args.model, args.text, args.output, text_pair=args.text_pair,
                        tokenizer=args.tokenizer, layers=args.layers, heads=args.heads,
                        query=args.query_token, words=args.words, rollout=args.rollout,
                        html=args.html, max_len=args.max_len, window=window,
                        max_cells=args.max_cells, html_max_tokens=args.html_max_tokens,
                        overrides=model_overrides(args), device=resolve_device(args.device))
    pred = summary["prediction"]
    suffix = f" | predicted: {pred['label']} (p={pred['probability']:.2f})" if pred else ""
    print(f"wrote {len(summary['files'])} files to {args.output} ({summary['num_tokens']} "
          f"tokens, {summary['seconds']['total']:.1f} s){suffix}")
    return 0


def visualize(model_dir, text: str, output, *, text_pair: str | None = None,
              tokenizer=None, layers: list[str] | None = None, heads: list[str] | None = None,
              query: int = 0, words: bool = False, rollout: bool = False, html: bool = False,
              max_len: int | None = None, window: tuple[int, int] | None = None,
              max_cells: int = 160, html_max_tokens: int = 256, overrides: dict | None = None,
              device=None) -> dict:
    """Draw the attention of the checkpoint in ``model_dir`` on ``text`` into ``output``
    (the files listed in EPILOG) and return the summary that is also written as
    ``summary.json``. ``layers``/``heads`` take the CLI forms (``["0,2", "-1"]``);
    ``overrides`` change fields of the model's config for this run (another attention
    backend: ``{"attention": {"backend": "sliding_window", "window": 64}}``)."""
    import torch

    from lanistr import viz
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.io import write_json, write_text
    from lanistr.nn import load_model

    started = time.perf_counter()
    device = torch.device(device or "cpu")
    model = load_model(model_dir, **(overrides or {})).to(device).eval()
    config = model.config
    tok = Tokenizer.from_pretrained(tokenizer or model_dir)
    from lanistr.tasks.run_config import read_meta

    meta = read_meta(model_dir)  # a fine-tuned model: read the text as it was trained
    cut = meta.get("truncation", "head") if max_len is None else "head"
    max_len = max_len or meta.get("max_len") or config.max_len
    if max_len > config.max_len:
        raise ConfigError(f"--max-len {max_len} is longer than the model's max_len "
                          f"{config.max_len} ({model_dir}/config.json)")
    batch = tok.encode(text, text_pair, max_length=max_len, padding=True, truncation=cut)
    if batch.num_truncated:
        print(f"note: the input was truncated to {max_len} tokens"
              + (" (its head and tail, as the model was trained)" if cut == "head_tail" else ""))
    n = int(batch.attention_mask[0].sum())
    loaded = time.perf_counter()
    with torch.inference_mode():
        out = model(batch.input_ids.to(device), batch.attention_mask.to(device),
                    batch.token_type_ids.to(device), output_attentions=True)
    forward_done = time.perf_counter()
    if not out.attentions:
        raise LanistrError(f"{model_dir}: the model returned no attention weights")
    tokens = tok.convert_ids_to_tokens(batch.input_ids[0, :n])
    per_layer = viz.as_layers(out.attentions, 0, n)
    unit = "token"
    if words:
        starts, tokens = viz.word_groups(tokens, batch.word_ids[0][:n])
        per_layer = [la.aggregate(starts) for la in per_layer]
        unit = "word"
    if not 0 <= query < len(tokens):
        raise ConfigError(f"--query-token {query}: the input has {len(tokens)} "
                          f"{unit}s (0..{len(tokens) - 1})")
    sel_layers = parse_indices(layers, len(per_layer), "layers")
    sel_heads = parse_indices(heads, per_layer[0].num_heads, "heads")

    pred = prediction(model, out)
    suffix = f" | predicted: {pred[0]} (p={pred[1]:.2f})" if pred else ""
    qname = f"{unit} {query} {tokens[query]!r}"
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def save(fig, name: str) -> None:
        viz.save_figure(fig, output / name)
        written.append(name)

    common = dict(window=window, max_cells=max_cells, unit=unit)
    for li in sel_layers:
        save(viz.heads_heatmap(per_layer, tokens, li, query=query, **common,
                               title=f"Layer {li}: attention from {qname}{suffix}"),
             f"heads_L{li:02d}.png")
        for h, fig in viz.attention_heatmaps(per_layer, tokens, li, sel_heads, **common,
                                             title="Layer {layer}, head {head}"
                                             + suffix.replace("{", "{{").replace("}", "}}")):
            save(fig, f"attention_L{li:02d}_H{h:02d}.png")
    save(viz.attention_grid(per_layer, tokens, max_cells=max_cells, unit=unit,
                            title=f"All layers x heads ({len(tokens)} {unit}s){suffix}"),
         "grid.png")
    if rollout:
        save(viz.rollout_figure(per_layer, tokens, query=query, **common,
                                title=f"Attention rollout ({len(per_layer)} layers){suffix}"),
             "rollout.png")
    if html:
        title = f"{Path(model_dir).resolve().name}: attention ({len(tokens)} {unit}s){suffix}"
        notes = [f"Model {model_dir} ({config.architecture}, attention backend "
                 f"{config.attention.backend}, {len(per_layer)} layers x "
                 f"{per_layer[0].num_heads} heads)."]
        write_text(output / "attention.html",
                   viz.render_html(per_layer, tokens, title=title, query=query,
                                   rollout=True, window=window,
                                   max_tokens=html_max_tokens, notes=notes))
        written.append("attention.html")
    done = time.perf_counter()
    summary = {
        "model": str(model_dir),
        "backend": config.attention.backend,
        "unit": unit,
        "num_tokens": n,
        "tokens": list(tokens),
        "query": query,
        "prediction": {"label": pred[0], "probability": pred[1]} if pred else None,
        "files": written,
        "seconds": {"load": round(loaded - started, 3),
                    "forward": round(forward_done - loaded, 3),
                    "draw": round(done - forward_done, 3), "total": round(done - started, 3)},
    }
    write_json(output / "summary.json", summary)
    return summary
