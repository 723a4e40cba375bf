"""`lanistr embed`: sentence embeddings (mean pooling + L2 norm) from any checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lanistr.commands import (
    add_model_args,
    add_progress_args,
    model_overrides,
    positive_int,
    progress_enabled,
    resolve_device,
)

SUFFIXES = (".npy", ".jsonl")


def register(sub) -> None:
    p = sub.add_parser(
        "embed", help="sentence embeddings of texts (mean-pooled, L2-normalised)",
        description=(
            "Embed texts with any lanistr checkpoint that has an encoder (bare encoder, MLM, "
            "classifier, tagger, seq2seq, a `convert-hf` output): the last hidden state "
            "averaged over each text's real tokens, then L2-normalised, as sentence-"
            "transformers computes it. Texts come as arguments or from --input (.txt: one text "
            "per line; .jsonl/.csv/.tsv: --text-field; - reads lines from standard input). "
            "--output NAME.npy writes a float32 array (N, D); NAME.jsonl writes "
            '{"text", "embedding"} per line; without --output the JSON lines go to stdout.'),
        epilog="example: lanistr embed --model runs/minilm --input sentences.txt "
               "--output vectors.npy",
    )
    add_model_args(p, "checkpoint directory (any lanistr model with an encoder)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument("--input", help="file of texts (.txt, .jsonl, .csv, .tsv; - for stdin)")
    p.add_argument("--text-field", default="text",
                   help="field holding the text in .jsonl/.csv/.tsv input (default: text)")
    p.add_argument("--output", help="NAME.npy (float32 (N, D)) or NAME.jsonl")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass")
    add_progress_args(p)
    p.set_defaults(func=run)


def read_texts(args) -> list[str]:
    from lanistr.data.readers import read_lines
    from lanistr.errors import LanistrError
    from lanistr.tasks.labelled import read_labelled_texts

    if args.input and args.texts:
        raise LanistrError("give texts on the command line or --input FILE, not both")
    if not args.input and not args.texts:
        raise LanistrError("nothing to embed: give TEXT arguments or --input FILE (- for stdin)")
    if not args.input:
        return list(args.texts)
    if args.input != "-" and Path(args.input).suffix.lower() in (".jsonl", ".csv", ".tsv"):
        texts, _, _, _ = read_labelled_texts(args.input, args.text_field, None, None)
        return list(texts)
    return read_lines(args.input)


def run(args) -> int:
    import numpy as np

    from lanistr import api
    from lanistr.errors import LanistrError
    from lanistr.io import atomic_path, check_output_file

    if args.output:  # before any work
        if Path(args.output).is_dir():
            check_output_file(args.output, args.overwrite)  # says it is a directory
        suffix = Path(args.output).suffix.lower()
        if suffix not in SUFFIXES:
            raise LanistrError(f"--output {args.output}: write embeddings to NAME.npy (float32 "
                               "array) or NAME.jsonl (one JSON record per text), not "
                               f"{suffix or 'a name without a suffix'}")
        check_output_file(args.output, args.overwrite)
    texts = read_texts(args)
    overrides = model_overrides(args)
    model = api.load(args.model, device=str(resolve_device(args.device)),
                     **({"overrides": overrides} if overrides else {}))
    vectors = model.embed(texts, batch_size=args.batch_size,
                          progress=progress_enabled(args) and bool(args.input))
    if args.output and args.output.lower().endswith(".npy"):
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, vectors.astype(np.float32, copy=False))
    else:
        lines = "".join(json.dumps({"text": t, "embedding": [round(float(x), 7) for x in v]},
                                   ensure_ascii=False) + "\n" for t, v in zip(texts, vectors))
        if not args.output:
            sys.stdout.write(lines)
            return 0
        with atomic_path(args.output) as tmp:
            tmp.write_text(lines, encoding="utf-8")
    print(f"wrote {len(texts)} embeddings of dimension {vectors.shape[1]} to {args.output}",
          file=sys.stderr)
    return 0
