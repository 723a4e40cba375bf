"""`lanistr evaluate`: metrics of a fine-tuned model on a labelled file."""

from __future__ import annotations

from pathlib import Path

from lanistr.commands import (
    add_model_args,
    add_progress_args,
    add_runtime_args,
    add_windows_args,
    model_overrides,
    positive_int,
    progress_enabled,
    resolve_device,
)


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a fine-tuned classifier or tagger on a labelled file",
        description=(
            "Evaluate a fine-tuned model (a `lanistr finetune` output's model/ dir). "
            "Classification (JSONL/CSV/TSV): accuracy, macro-F1, per-class precision/recall/F1 "
            "and a confusion-matrix PNG next to the --output json. Tagging (CoNLL): token "
            "accuracy, per-tag scores, and entity F1 per type (seqeval rules) for BIO tags. "
            "Seq2seq (JSONL/CSV/TSV pairs; --text-field/--label-field name the source/target "
            "fields): exact match, token F1 and corpus BLEU. The data fields default to those the model was fine-tuned with."),
        epilog="example: lanistr evaluate --model runs/spam/model --data data/spam_test.jsonl "
               "--output runs/spam/test.json",
    )
    add_model_args(p)
    p.add_argument("--data", required=True, help="labelled file (.jsonl/.csv/.tsv, or CoNLL)")
    p.add_argument("--output", help="write the metrics here (json) and the confusion matrix "
                                    "beside it as NAME_confusion.png")
    p.add_argument("--text-field", help="field holding the text (classification)")
    p.add_argument("--text-pair-field", help="field holding the second text of a pair")
    p.add_argument("--label-field", help="field holding the label (classification)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output file (and its confusion matrix)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="examples per forward pass")
    add_windows_args(p)
    add_runtime_args(p)
    add_progress_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from lanistr.io import check_output_file, write_json

    if args.output:  # before any work: a bad path fails now, not after the evaluation
        out = check_output_file(args.output, args.overwrite)
        check_output_file(out.with_name(f"{out.stem}_confusion.png"), args.overwrite)
    from lanistr.tasks.predict import Predictor
    from lanistr.tasks.seq2seq import is_seq2seq_model

    if args.runtime == "torch" and is_seq2seq_model(args.model):  # exact match, token F1, BLEU: see `lanistr generate`
        from lanistr.commands.generate import evaluate

        return evaluate(args)
    predictor = Predictor(args.model, windows=args.windows, stride=args.stride,
                          runtime=args.runtime, device=resolve_device(args.device),
                          overrides=model_overrides(args))
    metrics = predictor.evaluate_file(
        args.data, text_field=args.text_field, text_pair_field=args.text_pair_field,
        label_field=args.label_field, batch_size=args.batch_size, progress=progress_enabled(args))
    print(report(metrics))
    if args.output:
        out = Path(args.output)
        write_json(out, metrics)
        written = [str(out)]
        if metrics["task"] == "classify":
            png = out.with_name(f"{out.stem}_confusion.png")
            save_confusion_png(metrics["confusion_matrix"], metrics["labels"], png)
            written.append(str(png))
        print("wrote " + ", ".join(written))
    return 0


def report(m: dict) -> str:
    """A readable summary of :meth:`Predictor.evaluate_file`'s metrics."""
    lines = []
    if m["task"] == "classify":
        lines.append(f"{m['examples']} examples: accuracy {m['accuracy']:.4f}, macro-F1 "
                     f"{m['macro_f1']:.4f}, loss {m['loss']:.4f}"
                     + (f" ({m['truncated']} truncated)" if m.get("truncated") else "")
                     + (f" (long texts: all {m['windows']['max_len']}-token windows, "
                        f"{m['windows']['stride']} apart)" if m.get("windows") else ""))
        per = m["per_class"]
    else:
        lines.append(f"{m['sentences']} sentences, {m['tokens']} words: token accuracy "
                     f"{m['token_accuracy']:.4f}"
                     + (f", entity F1 {m['entity_f1']:.4f}" if "entity_f1" in m else ""))
        per = m.get("per_type") or m["per_tag"]
    width = max([len(k) for k in per] + [5])
    lines.append(f"{'label':<{width}}  precision  recall     f1  support")
    for name, s in per.items():
        lines.append(f"{name:<{width}}  {s['precision']:9.4f}  {s['recall']:6.4f}  "
                     f"{s['f1']:6.4f}  {s['support']:7d}")
    return "\n".join(lines)


def save_confusion_png(cm, labels, path, title: str | None = None) -> None:
    """A confusion matrix (rows true, columns predicted) with counts, as a PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    from lanistr.io import atomic_path

    cm = np.asarray(cm)
    k = len(labels)
    side = min(12.0, 2.5 + 0.45 * k)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(k), [str(x) for x in labels], rotation=45 if k > 4 else 0, ha="right"
                  if k > 4 else "center", fontsize=8 if k > 10 else 10)
    ax.set_yticks(range(k), [str(x) for x in labels], fontsize=8 if k > 10 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7
                        if k > 10 else 10, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title or f"confusion matrix ({int(cm.sum())} examples)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
