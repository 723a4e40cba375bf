"""Which pretraining choices learn fastest per wall-clock second on this machine (issue #20).

    python benchmarks/pretrain_recipe.py --corpus runs/corpus.txt --minutes 5 --jobs 2

Every variant is a `lanistr pretrain` run from scratch for the same wall-clock budget
(``train.schedule_by=time``: warm-up and decay follow the elapsed fraction of the budget, so
each reaches lr 0 at it), on the same corpus, the same held-out documents (every 50th
document of the corpus, so every source is in it) and the same tokenizer (trained once per
vocabulary size, the token cache built once and shared). ``--jobs 2`` runs two variants at a
time with one thread each (the load is recorded). Held-out masks are fixed and the masking
rate is the same for every variant, so the final held-out MLM loss and accuracy compare.

Variants are cumulative where the name says ``+``: each adds one change to the one before,
so the table reads as an ablation path. Writes benchmarks/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import RESULTS, load_average, machine_info, write_json

#: The ablation path: (name, overrides). `defaults` is `lanistr pretrain` as it stood before
#: this study (post-norm mini, dropout 0.1, lr 5e-4 without warm-up, batch 32, vocab 8000).
VARIANTS: list[tuple[str, dict]] = [
    ("defaults", {}),
    ("+warmup 6%", {"train.warmup_ratio": 0.06}),
    ("+lr 1e-3", {"train.warmup_ratio": 0.06, "train.lr": 1e-3}),
    ("+dropout 0", {"train.warmup_ratio": 0.06, "train.lr": 1e-3,
                    "model.dropout": 0.0, "model.attention_dropout": 0.0}),
    ("+pre-norm", {"train.warmup_ratio": 0.06, "train.lr": 1e-3, "model.dropout": 0.0,
                   "model.attention_dropout": 0.0, "model.norm": "pre"}),
    ("+pre-norm lr 2e-3", {"train.warmup_ratio": 0.06, "train.lr": 2e-3, "model.dropout": 0.0,
                           "model.attention_dropout": 0.0, "model.norm": "pre"}),
    ("+batch 64", {"train.warmup_ratio": 0.06, "train.lr": 1e-3, "model.dropout": 0.0,
                   "model.attention_dropout": 0.0, "train.batch_size": 64}),
    ("+batch 16", {"train.warmup_ratio": 0.06, "train.lr": 1e-3, "model.dropout": 0.0,
                   "model.attention_dropout": 0.0, "train.batch_size": 16}),
]


def split_corpus(corpus: Path, work: Path, every: int = 50, max_docs: int = 0
                 ) -> tuple[Path, Path]:
    """The corpus's documents (the first ``max_docs``, 0 = all) -> train.txt and held.txt
    (every ``every``-th document, so every source of the corpus is in both)."""
    from lanistr.data.readers import read_documents

    docs = [d.text for d in read_documents(corpus)]
    docs = docs[:max_docs] if max_docs else docs
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    paths = work / "train.txt", work / "held.txt"
    for path, part in zip(paths, (train, held)):
        path.write_text("\n\n".join(part) + "\n", encoding="utf-8")
    return paths


def prepare(train: Path, held: Path, work: Path, vocab: int) -> tuple[Path, Path]:
    """A tokenizer of ``vocab`` words and the shared token cache of both files."""
    from lanistr.data.pretraining import build_token_cache
    from lanistr.data.tokenizer import Tokenizer, train_tokenizer

    tok_dir, cache = work / f"tokenizer-{vocab}", work / "cache"
    if not (tok_dir / "tokenizer.json").is_file():
        train_tokenizer([str(train)], vocab, tok_dir)
    tokenizer = Tokenizer.from_pretrained(tok_dir)
    for path in (train, held):
        build_token_cache([path], tokenizer, cache)
    return tok_dir, cache


def run_variant(name: str, overrides: dict, args, files: tuple[Path, Path], tok: Path,
                cache: Path, work: Path) -> dict:
    out = work / "runs" / name.replace(" ", "_").replace("+", "p").replace("%", "")
    sets = {"data.train": str(files[0]), "data.eval": str(files[1]), "data.tokenizer": str(tok),
            "data.cache_dir": str(cache), "data.max_len": args.max_len,
            "data.eval_max_examples": args.eval_examples, "train.schedule_by": "time",
            "train.max_minutes": args.minutes, "train.max_steps": 0, "train.eval_every": 10**9,
            "train.save_every": 0, "train.num_threads": args.threads, "train.seed": 0,
            **overrides}
    cmd = [sys.executable, "-m", "lanistr", "pretrain", "--output", str(out), "--overwrite",
           "--no-progress"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    load = [load_average()]
    begin = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    load.append(load_average())
    if proc.returncode:
        raise SystemExit(f"{name}: lanistr pretrain failed:\n{proc.stderr[-3000:]}")
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    last = {r["name"]: (int(r["step"]), float(r["value"])) for r in rows}
    tps = [float(r["value"]) for r in rows if r["name"] == "tokens_per_s"]
    result = {"name": name, "overrides": overrides, "steps": last["loss"][0],
              "held_out_mlm_loss": last["eval_mlm_loss"][1],
              "held_out_mlm_accuracy": last["eval_mlm_accuracy"][1],
              "tokens_per_s": sum(tps) / len(tps) if tps else None,
              "wall_s": time.time() - begin, "load_average": load}
    print(f"{name:>22}: {result['steps']:5d} steps, held-out loss "
          f"{result['held_out_mlm_loss']:.3f}, acc {result['held_out_mlm_accuracy']:.3f}",
          flush=True)
    return result


def table(result: dict) -> str:
    runs = result["runs"]
    base = runs[0]["held_out_mlm_loss"]
    lines = [f"# Pretraining recipe study: {result['minutes']:g} min per variant",
             "",
             f"Corpus `{result['corpus']}` ({result['train_docs']:,} training documents, "
             f"{result['held_docs']:,} held out: every 50th), mini preset, max_len "
             f"{result['max_len']}, vocab {result['vocab']}, {result['jobs']} runs at a time with "
             f"{result['threads']} thread(s) each; held-out masks fixed, 15% masking for all. "
             "Cumulative where the name starts with `+` (each adds one change to the row "
             "above, except the batch rows, which change the `+dropout 0` row).",
             "",
             "| variant | steps | tokens/s | held-out MLM loss | vs defaults | held-out MLM acc | load |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "-"
        lines.append(f"| {r['name']} | {r['steps']} | {tps} | {r['held_out_mlm_loss']:.3f} | "
                     f"{r['held_out_mlm_loss'] - base:+.3f} | {r['held_out_mlm_accuracy']:.3f} | "
                     f"{r['load_average'][0][0]}-{r['load_average'][1][0]} |")
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="a `lanistr data corpus` output")
    parser.add_argument("--work", required=True, help="a directory for the runs")
    parser.add_argument("--minutes", type=float, default=5.0, help="budget per variant")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--eval-examples", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=2, help="variants run at a time")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--note", default="")
    parser.add_argument("--name", default="pretrain_recipe")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = split_corpus(Path(args.corpus), work)
    tok, cache = prepare(*files, work, args.vocab)
    variants = [v for v in VARIANTS if not args.only or v[0] in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda v: run_variant(*v, args, files, tok, cache, work), variants))
    count = lambda p: p.read_text(encoding="utf-8").count("\n\n") + 1  # noqa: E731
    result = {"benchmark": "pretrain_recipe", "corpus": args.corpus, "minutes": args.minutes,
              "max_len": args.max_len, "vocab": args.vocab, "jobs": args.jobs,
              "threads": args.threads, "train_docs": count(files[0]),
              "held_docs": count(files[1]), "machine": machine_info(), "runs": runs,
              "note": args.note}
    path = write_json(args.name, result)
    (RESULTS / f"{args.name}.md").write_text(table(result), encoding="utf-8")
    print(f"wrote {path} and {args.name}.md")


if __name__ == "__main__":
    main()
