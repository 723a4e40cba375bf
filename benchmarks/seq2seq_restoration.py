"""Punctuation and capitalisation restoration on State of the Union speeches (seq2seq).

    python benchmarks/seq2seq_restoration.py train --encoder sotu-mini   # ~25 min, CPU
    python benchmarks/seq2seq_restoration.py train --encoder minilm
    python benchmarks/seq2seq_restoration.py report                     # -> results/*.md

Data: ``scripts/make_restoration_pairs.py`` (built here if missing): source = a sentence (at
most 40 words) lower-cased without punctuation, target = the original; train on speeches before
2000 (the last 3 of them are dev), test on the speeches from 2000 on.

Systems, all scored on the same test pairs (a seeded sample of ``--test-pairs``; the baselines
also on the whole test split):

* ``identity``: the lower-cased, unpunctuated input as output;
* ``rules``: capitalise the first word and ``i``, add a final period;
* ``lanistr + copy, sotu-mini``: LanistrForSeq2SeqCopy (pointer-generator) on the encoder of
  ``runs/sotu-mini/model`` (our own MLM pretraining; skipped with a note if absent), 2 decoder
  layers warm-started from its layers;
* ``lanistr + copy, MiniLM``: the same on MiniLM-L6-H384 (``lanistr convert-hf minilm``);
* the same two without the copy mechanism (``train --no-copy``: plain LanistrForSeq2Seq).

Training uses ``lanistr finetune`` (task: seq2seq) with a wall-clock budget; the logs and models
go to ``runs/seq2seq/<encoder>[-copy]/``. Metrics: exact match, token F1 (whitespace tokens, case and
punctuation sensitive) and corpus BLEU (sacrebleu's 13a, equal to sacrebleu).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import _common

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "seq2seq"
RESULTS = ROOT / "benchmarks" / "results" / "seq2seq_restoration.md"

ENCODERS = {
    "sotu-mini": {"init": ROOT / "runs" / "sotu-mini" / "model", "lr": 1e-3, "batch_size": 32,
                  "max_steps": 1500},
    "minilm": {"init": RUNS / "minilm-encoder", "lr": 3e-4, "batch_size": 16,
               "max_steps": 1200},
}


def data_dir() -> Path:
    from lanistr.data.fetch import data_root

    return data_root() / "sotu-restoration"


def ensure_pairs() -> Path:
    out = data_dir()
    if not (out / "test.jsonl").is_file():
        sys.path.insert(0, str(ROOT / "scripts"))
        import make_restoration_pairs

        from lanistr.data.fetch import dataset_dir

        make_restoration_pairs.build(dataset_dir("sotu"), out)
    return out


def ensure_encoder(name: str) -> Path | None:
    init = ENCODERS[name]["init"]
    if name == "minilm":
        _common.converted_minilm(init)
    return init if (init / "config.json").is_file() else None


def run_dir(name: str, copy: bool) -> Path:
    return RUNS / (f"{name}-copy" if copy else name)


def run_config(name: str, minutes: float, threads: int, copy: bool) -> dict:
    spec = ENCODERS[name]
    data = ensure_pairs()
    return {
        "task": "seq2seq",
        "init": str(spec["init"]),
        # `long: none` reads checkpoints written before model.long became a typed field
        "model": {"decoder_layers": 2, "long": "none"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "dev.jsonl"),
                 "max_source_len": 64, "max_target_len": 96},
        "finetune": {"eval_max_examples": 200, "metric": "bleu", "copy": copy},
        "train": {"batch_size": spec["batch_size"], "lr": spec["lr"], "epochs": 0,
                  "max_steps": spec["max_steps"], "max_minutes": minutes, "warmup_steps": 20,
                  "eval_every": 50, "save_every": 50, "log_every": 10, "num_threads": threads,
                  "progress": False, "seed": 0},
    }


def train(args) -> int:
    import yaml

    from lanistr.cli import main

    if ensure_encoder(args.encoder) is None:
        print(f"{ENCODERS[args.encoder]['init']}: no encoder checkpoint; skipping")
        return 0
    out = run_dir(args.encoder, not args.no_copy)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "run.yaml"
    settings = run_config(args.encoder, args.minutes, args.threads, not args.no_copy)
    config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    argv = ["finetune", "--config", str(config), "--output", str(out)]
    return main(argv + (["--resume"] if args.resume else ["--overwrite"]))


# --------------------------------------------------------------------------- report


def rules(source: str) -> str:
    words = ["I" if w == "i" else w for w in source.split()]
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def train_summary(run_dir: Path) -> dict:
    """Steps, minutes and the best dev evaluation of a training run (from its logs)."""
    import csv

    rows: dict[int, dict] = {}
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    evals = {s: r for s, r in rows.items() if "eval_bleu" in r}
    best = max(evals, key=lambda s: evals[s]["eval_bleu"]) if evals else None
    seconds, start = 0.0, None  # summed over the training sessions (a resume starts one)
    for line in (run_dir / "train.log").read_text(encoding="utf-8").splitlines():
        if not line[:4].isdigit():
            continue
        stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        if "global batch" in line:
            start = stamp
        elif "finished after" in line and start is not None:
            seconds, start = seconds + stamp - start, None
    return {"steps": max(rows) if rows else 0, "best_step": best,
            "dev": evals.get(best, {}), "minutes": seconds / 60,
            "final_loss": rows[max(rows)].get("loss") if rows else None}


def report(args) -> int:
    import torch

    from lanistr.tasks.seq2seq import Seq2SeqPredictor
    from lanistr.text_metrics import generation_metrics

    torch.set_num_threads(args.threads)
    data = ensure_pairs()
    test = read_jsonl(data / "test.jsonl")
    sample = sorted(random.Random(0).sample(range(len(test)), min(args.test_pairs, len(test))))
    pairs = [test[i] for i in sample]
    sources = [p["source"] for p in pairs]
    refs = [" ".join(p["target"].split()) for p in pairs]
    rows = []
    full_refs = [" ".join(p["target"].split()) for p in test]
    for name, fn in (("identity (lower-cased input)", lambda s: s),
                     ("rules (capitalise first word and i, final period)", rules)):
        rows.append((name, generation_metrics([fn(s) for s in sources], refs),
                     generation_metrics([fn(p["source"]) for p in test], full_refs), None, None))
    notes = [
        "- Ceiling of the markup targets (encode the reference with the model's tokenizer and "
        "markers, decode it back; what a perfect model could reach): " + ", ".join(
            f"{name}: EM {m['exact_match']:.3f} / BLEU {m['bleu']:.1f}"
            for name, m in codec_ceiling(refs).items()) + ".",
    ]
    systems = [(name, copy, f"lanistr{' + copy' if copy else ''}, {label}")
               for copy in (True, False)
               for name, label in (("sotu-mini", "own sotu-mini encoder"),
                                   ("minilm", "MiniLM-L6 encoder"))]
    for name, copy, label in systems:
        model_dir = run_dir(name, copy) / "model"
        if not (model_dir / "config.json").is_file():
            notes.append(f"- {label}: no trained model in {model_dir} (encoder checkpoint "
                         f"{ENCODERS[name]['init']} absent or training not run); skipped.")
            continue
        summary = train_summary(run_dir(name, copy))
        if not copy and not args.plain_test:
            rows.append((f"{label} (dev only)", None, None, summary, None))
            continue
        predictor = Seq2SeqPredictor(model_dir)
        for beams in args.beams:
            start = time.perf_counter()
            predictions = predictor.generate(sources, batch_size=32, num_beams=beams)
            seconds = time.perf_counter() - start
            metrics = generation_metrics(predictions, refs)
            rows.append((f"{label}, {'greedy' if beams == 1 else f'beam {beams}'}", metrics,
                         None, summary, seconds))
            if beams == args.beams[0]:
                examples = [(s, p, r) for s, p, r in zip(sources, predictions, refs)][:6]
                notes.append(f"- {label}: sample outputs (source / output / reference):")
                for s, p, r in examples:
                    notes.append(f"    - `{s}`<br>`{p}`<br>`{r}`")
    from lanistr.io import write_text

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS, render(rows, notes, len(pairs), len(test), args))
    print(RESULTS.read_text(encoding="utf-8"))
    return 0


def codec_ceiling(refs: list[str]) -> dict[str, dict]:
    from lanistr.data.tokenizer import Tokenizer
    from lanistr.tasks.seq2seq import TextCodec, prepare_tokenizer
    from lanistr.text_metrics import generation_metrics

    out = {}
    for name, spec in ENCODERS.items():
        if not (spec["init"] / "tokenizer.json").is_file() and \
                not (spec["init"] / "vocab.txt").is_file():
            continue
        codec = TextCodec(prepare_tokenizer(Tokenizer.from_pretrained(spec["init"]), "markup"),
                          "markup")
        decoded = [codec.decode(ids[:95]) for ids in codec.encode(refs)]  # max_target_len 96
        out[f"{name} tokenizer"] = generation_metrics(decoded, refs)
    return out


def render(rows, notes, n_sample: int, n_test: int, args) -> str:
    lines = [
        "# Seq2seq: punctuation and capitalisation restoration (SOTU)",
        "",
        f"Generated by `python benchmarks/seq2seq_restoration.py report` on "
        f"{time.strftime('%Y-%m-%d')}. Test pairs: a seeded sample of {n_sample} of the "
        f"{n_test} test sentences (speeches from 2000 on); training on speeches before 2000. "
        "Source: the sentence lower-cased with punctuation removed; target: the original text. "
        "Exact match and token F1 compare whitespace tokens as they are (case and punctuation "
        "count); BLEU is corpus BLEU with sacrebleu's defaults (13a, case-sensitive).",
        "",
        "| system | exact match | token F1 | BLEU | full test: EM / BLEU | training | "
        "best dev: EM / BLEU (step) | generation s |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, m, full, summary, seconds in rows:
        test_s = (f"{m['exact_match']:.3f} | {m['token_f1']:.3f} | {m['bleu']:.1f}" if m
                  else "- | - | -")
        full_s = f"{full['exact_match']:.3f} / {full['bleu']:.1f}" if full else "-"
        if summary:
            dev = summary["dev"]
            train_s = f"{summary['steps']} steps, {summary['minutes']:.0f} min"
            dev_s = (f"{dev.get('eval_exact_match', float('nan')):.3f} / "
                     f"{dev.get('eval_bleu', float('nan')):.1f} ({summary['best_step']})")
        else:
            train_s, dev_s = "-", "-"
        gen_s = f"{seconds:.0f}" if seconds is not None else "-"
        lines.append(f"| {name} | {test_s} | {full_s} | {train_s} | {dev_s} | {gen_s} |")
    lines += ["", "Notes:", ""] + notes + [
        "- Training: `train --encoder NAME --minutes M --threads 1` (the two encoders side by "
        "side, one thread each, on a 2-core CPU machine; the training column gives the steps "
        "and minutes that bought). Both lanistr systems: 2 decoder layers warm-started from "
        "the encoder's first layers, markup targets, greedy decoding, dev selection on BLEU "
        "over 200 dev pairs (the best checkpoint is `model/`).",
        "- The own encoder is `runs/sotu-mini/model`: the 15-minute MLM pretraining of the "
        "mini preset on SOTU speeches before 2000 (`benchmarks/results/pretrain_sotu_mini.json`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one system (lanistr finetune, task: seq2seq)")
    t.add_argument("--encoder", choices=sorted(ENCODERS), required=True)
    t.add_argument("--minutes", type=float, default=25.0, help="wall-clock training budget")
    t.add_argument("--threads", type=int, default=1, help="torch threads")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-copy", action="store_true",
                   help="plain decoder (LanistrForSeq2Seq) instead of the copy model")
    t.set_defaults(func=train)
    r = sub.add_parser("report", help="evaluate the trained systems and the baselines")
    r.add_argument("--test-pairs", type=int, default=1000)
    r.add_argument("--beams", type=int, nargs="+", default=[1])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--plain-test", action="store_true",
                   help="also run the models without the copy mechanism on the test pairs "
                        "(default: report their dev scores from training only)")
    r.set_defaults(func=report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
