"""`lanistr generate`: text generation with a seq2seq model."""

from __future__ import annotations

import argparse

from lanistr.commands import (
    add_model_args,
    add_progress_args,
    model_overrides,
    positive_int,
    progress_enabled,
    resolve_device,
)


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate outputs with a seq2seq model (greedy or beam search)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Generate with a seq2seq model (a `lanistr finetune` output with task: seq2seq). "
            "Give the source texts as arguments (one output line each), or --input FILE: a "
            ".txt file (one source per line) or a JSONL/CSV/TSV file with a source field "
            "(default: the one the model was trained with). With --output the predictions are "
            "written there (.jsonl: the input records plus a `prediction` field; otherwise one "
            "line each). When the input records also have the target field, exact match, "
            "token F1 and corpus BLEU are printed. Decoding settings default to the model's "
            "generation_config.json."),
        epilog="example: lanistr generate --model runs/restore/model \"the state of our union "
               "is strong\" --beams 4",
    )
    add_model_args(p, "seq2seq model directory")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="source texts")
    p.add_argument("--input", help="file of sources (.txt lines, or .jsonl/.csv/.tsv records)")
    p.add_argument("--output", help="write predictions here instead of printing them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--source-field", help="source field of --input records")
    p.add_argument("--target-field", help="reference field of --input records (for metrics)")
    p.add_argument("--beams", type=positive_int, help="beam size (1 = greedy; default: the model's)")
    p.add_argument("--max-new-tokens", type=positive_int, help="most tokens to generate per text")
    p.add_argument("--length-penalty", type=float,
                   help="beam score = log-probability / length ** penalty")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole prefix at every step (slow; for checking)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per batch")
    add_progress_args(p)
    p.set_defaults(func=_no_grad(run))


def _no_grad(fn):
    """Run a command handler without autograd (and leave the global grad mode alone, so an
    in-process ``main([...])`` call does not change the caller's state)."""
    import functools

    @functools.wraps(fn)
    def wrapper(args):
        import torch

        with torch.no_grad():
            return fn(args)

    return wrapper


def run(args) -> int:
    from pathlib import Path

    from lanistr.errors import LanistrError
    from lanistr.io import check_output_file
    from lanistr.tasks.seq2seq import Seq2SeqPredictor, read_pairs

    if args.output:  # before any work
        check_output_file(args.output, args.overwrite)
    if bool(args.texts) == bool(args.input):
        raise LanistrError("give source texts as arguments or --input FILE (not both)")
    if args.batch_size < 1:
        raise LanistrError(f"--batch-size={args.batch_size} must be >= 1")
    predictor = Seq2SeqPredictor(args.model, resolve_device(args.device),
                                 overrides=model_overrides(args))
    settings = {"num_beams": args.beams, "max_new_tokens": args.max_new_tokens,
                "length_penalty": args.length_penalty,
                "use_cache": False if args.no_cache else None}
    records, targets = None, None
    if args.texts:
        sources = list(args.texts)
    elif args.input == "-" or Path(args.input).suffix.lower() == ".txt":
        from lanistr.data.readers import read_lines

        sources = read_lines(args.input)
    else:
        from lanistr.data.readers import read_records

        source_field = args.source_field or predictor.meta.get("source_field", "source")
        target_field = args.target_field or predictor.meta.get("target_field", "target")
        records = read_records(Path(args.input), [source_field])
        has_targets = all(target_field in r.values for r in records)
        sources, targets, _ = read_pairs(args.input, source_field,
                                         target_field if has_targets else None)
    predictions = predictor.generate(sources, batch_size=args.batch_size,
                                     progress=progress_enabled(args), **settings)
    if args.output:
        _write(Path(args.output), predictions, records)
        print(f"wrote {len(predictions)} predictions to {args.output}")
    else:
        for text in predictions:
            print(text)
    if targets is not None:
        from lanistr.text_metrics import generation_metrics

        m = generation_metrics(predictions, [predictor.codec.reference(t) for t in targets])
        print(f"{len(predictions)} examples: exact_match={m['exact_match']:.4f}, "
              f"token_f1={m['token_f1']:.4f}, bleu={m['bleu']:.2f}")
    return 0


def _write(path, predictions, records) -> None:
    import json

    from lanistr.io import write_text

    if path.suffix.lower() == ".jsonl":
        rows = ([{**r.values, "prediction": p} for r, p in zip(records, predictions)]
                if records is not None else [{"prediction": p} for p in predictions])
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        write_text(path, "".join(p.replace("\n", " ") + "\n" for p in predictions))


@_no_grad
def evaluate(args) -> int:
    """`lanistr evaluate` on a seq2seq model (dispatched from the evaluate command)."""

    from lanistr.io import write_json
    from lanistr.tasks.seq2seq import Seq2SeqPredictor

    predictor = Seq2SeqPredictor(args.model, resolve_device(args.device),
                                 overrides=model_overrides(args))
    metrics = predictor.evaluate_file(
        args.data, source_field=args.text_field, target_field=args.label_field,
        batch_size=args.batch_size, progress=progress_enabled(args))
    print(f"{metrics['examples']} examples (beams {metrics['num_beams']}): exact match "
          f"{metrics['exact_match']:.4f}, token F1 {metrics['token_f1']:.4f}, "
          f"BLEU {metrics['bleu']:.2f}")
    if args.output:
        write_json(args.output, metrics)
        print(f"wrote {args.output}")
    return 0
