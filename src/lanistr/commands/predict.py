"""`lanistr predict`: run a fine-tuned classifier or tagger on new text."""

from __future__ import annotations

import json
import sys
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
        "predict", help="classify texts or tag words with a fine-tuned model",
        description=(
            "Run a fine-tuned model on texts given on the command line or in --input "
            "(.txt: one text per line; .jsonl/.csv/.tsv: the model's text field; .conll: "
            "sentences, for taggers). Writes JSON lines to --output or stdout: classification "
            '{"text", "label", "probabilities": {label: p}}; tagging {"words", "tags"}, with '
            "the words of each text split on whitespace."),
        epilog='example: lanistr predict --model runs/spam/model "WIN a FREE cruise now!!!"',
    )
    add_model_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify or tag")
    p.add_argument("--input", help="file of inputs (.txt, .jsonl, .csv, .tsv or .conll; "
                                   "- reads one text per line from standard input)")
    p.add_argument("--output", help="JSONL output file, NAME.jsonl (default: stdout)")
    p.add_argument("--text-field", help="field holding the text in .jsonl/.csv/.tsv input")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="texts per forward pass")
    add_windows_args(p)
    add_runtime_args(p)
    add_progress_args(p)
    p.set_defaults(func=run)


def read_inputs(args, predictor) -> tuple[list[str], list[str] | None, list[list[str]] | None]:
    """(texts, pairs, words): words only for a tagger, pairs only for a pair classifier."""
    from lanistr.data.readers import read_conll, read_lines
    from lanistr.errors import LanistrError
    from lanistr.tasks.labelled import read_labelled_texts

    if args.input and args.texts:
        raise LanistrError("give texts on the command line or --input FILE, not both")
    if not args.input and not args.texts:
        raise LanistrError("nothing to predict: give TEXT arguments or --input FILE")
    pair_field = predictor.meta.get("text_pair_field")
    if not args.input:
        if pair_field:
            raise LanistrError(f"this model classifies text pairs ({pair_field!r}); give them in "
                               "an --input .jsonl/.csv/.tsv file")
        texts = list(args.texts)
    else:
        suffix = Path(args.input).suffix.lower()
        if suffix == ".conll":
            if predictor.kind != "tag":
                raise LanistrError(f"{args.input}: CoNLL input needs a tagger, this model is a "
                                   "classifier")
            words = [s.words for s in read_conll(args.input)]
            return [" ".join(w) for w in words], None, words
        if suffix in (".jsonl", ".csv", ".tsv"):
            field = args.text_field or predictor.meta.get("text_field", "text")
            texts, pairs, _, _ = read_labelled_texts(args.input, field, None, pair_field)
            if predictor.kind == "classify":
                return texts, pairs, None
        else:
            texts = read_lines(args.input)
        if pair_field and predictor.kind == "classify":
            raise LanistrError(f"{args.input}: this model classifies text pairs; give a "
                               f".jsonl/.csv/.tsv file with fields {predictor.meta.get('text_field')!r} "
                               f"and {pair_field!r}")
    words = [t.split() for t in texts] if predictor.kind == "tag" else None
    return texts, None, words


def run(args) -> int:
    from lanistr.io import atomic_path, check_output_file

    if args.output:  # before any work
        if Path(args.output).suffix.lower() != ".jsonl":
            from lanistr.errors import LanistrError

            raise LanistrError(f"--output {args.output}: predictions are written as JSON lines; "
                               "name the file NAME.jsonl")
        check_output_file(args.output, args.overwrite)
    from lanistr.tasks.predict import Predictor

    predictor = Predictor(args.model, windows=args.windows, stride=args.stride,
                          runtime=args.runtime, device=resolve_device(args.device),
                          overrides=model_overrides(args))
    texts, pairs, words = read_inputs(args, predictor)
    progress = progress_enabled(args) and bool(args.input)
    rows = []
    if predictor.kind == "classify":
        probs, truncated = predictor.classify(texts, pairs, args.batch_size, progress)
        for i, text in enumerate(texts):
            row = {"text": text}
            if pairs is not None:
                row["text_pair"] = pairs[i]
            row["label"] = predictor.labels[int(probs[i].argmax())]
            row["probabilities"] = {name: round(float(p), 6)
                                    for name, p in zip(predictor.labels, probs[i])}
            rows.append(row)
        note = f"{truncated} of {len(texts)} texts truncated to max_len={predictor.max_len}"
    else:
        tags, truncated = predictor.tag(words, args.batch_size, progress)
        rows = [{"words": w, "tags": t} for w, t in zip(words, tags)]
        note = (f"{truncated} of {len(words)} texts longer than max_len={predictor.max_len} "
                "were tagged in chunks")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(lines, encoding="utf-8")
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    if truncated:
        print(note, file=sys.stderr)
    return 0
