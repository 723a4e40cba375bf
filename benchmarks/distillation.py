"""A fine-tuned MiniLM teacher against a distilled student with half its layers.

    python benchmarks/distillation.py                      # the issue #20 target run
    python benchmarks/distillation.py --quick              # a smoke test (~2-3 min)

For each dataset (spamassassin, reuters-r8, 20newsgroups; fetched with `lanistr data fetch`):

1. teacher: MiniLM-L6-H384 (converted with `lanistr convert-hf minilm`) fine-tuned with
   `lanistr finetune` (the default recipe, capped at ``--minutes``), or a model fine-tuned
   that way already (``--teacher NAME=DIR``, e.g. a ``classification_quality.py`` seed);
2. student: the same MiniLM cut to ``--student-layers`` layers (its lower layers' weights),
   trained by `lanistr distill` in task mode for ``--student-epochs`` epochs at lr
   ``--student-lr``: the teacher's soft targets at temperature 2 (KL x T^2) plus 0.5 x the
   gold labels' cross-entropy, on the same training set, reading texts as the teacher does
   (its max_len and truncation); the teacher's logits are computed once per example;
3. both evaluated on the whole test split: accuracy, macro-F1; inference throughput (real
   tokens per second through the same ``Predictor`` as `lanistr predict`, teacher and student
   timed interleaved over ``--repeats`` rounds, median) on ``--speed-examples`` test texts.

Target (issue #20): the student keeps >= 97 % of the teacher's accuracy at >= 2x throughput.
Writes ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import (
    RESULTS,
    converted_minilm,
    interleaved,
    load_average,
    machine_info,
    median,
    setup_torch,
)
from _common import write_json as write_result

DATASETS = ("spamassassin", "reuters-r8", "20newsgroups")


def subset(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` lines of a JSONL file, taken evenly over the file (every k-th)."""
    lines = [ln for ln in src.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if n and n < len(lines):
        step = len(lines) / n
        lines = [lines[int(i * step)] for i in range(n)]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def cli(*argv: str, sets: list[str]) -> None:
    from lanistr.cli import main

    code = main([*argv, *[a for s in sets for a in ("--set", s)]])
    if code:
        raise SystemExit(f"`lanistr {' '.join(argv)}` exited {code}")


def evaluate(model_dir: Path, texts: list[str], gold: list[str]) -> tuple[dict, object]:
    import numpy as np

    from lanistr.metrics import classification_scores
    from lanistr.tasks.predict import Predictor

    p = Predictor(model_dir)
    probs, _ = p.classify(texts)
    pred = probs.argmax(1)
    index = {name: i for i, name in enumerate(p.labels)}
    y = np.array([index[g] for g in gold])
    scores = classification_scores(y, pred, p.labels)
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}, p


def throughput(predictors: dict, texts: list[str], repeats: int) -> dict:
    from lanistr.tasks.labelled import encode_texts

    tokens = {k: sum(len(x) for x in encode_texts(p.tokenizer, texts, None, p.max_len)[0])
              for k, p in predictors.items()}
    times = interleaved({k: (lambda p=p: p.classify(texts)) for k, p in predictors.items()},
                        repeats=repeats, warmup=1)
    return {k: {"tokens": tokens[k], "seconds": times[k], "tokens_per_s": tokens[k] /
                median(times[k])} for k in predictors}


def one_dataset(name: str, args, work: Path, minilm: Path) -> dict:
    from lanistr.data.fetch import dataset_dir
    from lanistr.tasks.run_config import META_FILE

    data = dataset_dir(name)
    train = subset(data / "train.jsonl", work / f"{name}-train.jsonl", args.train_examples)
    test = subset(data / "test.jsonl", work / f"{name}-test.jsonl", args.test_examples)
    rows = [json.loads(ln) for ln in test.read_text(encoding="utf-8").splitlines()]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    common = ["train.progress=false", f"train.max_minutes={args.minutes}"]
    given = dict(t.split("=", 1) for t in args.teacher)
    teacher_s = None
    if name in given:
        teacher = Path(given[name])
    else:
        started = time.perf_counter()
        cli("finetune", "--output", str(work / f"{name}-teacher"), sets=[
            f"init={minilm}", f"data.train={train}", *common,
            *([f"data.max_len={args.max_len}"] if args.max_len else []),
            *([f"train.max_steps={args.steps}", "train.epochs=0"] if args.steps else [])])
        teacher_s = time.perf_counter() - started
        teacher = work / f"{name}-teacher" / "model"
    meta = json.loads((teacher / META_FILE).read_text(encoding="utf-8"))
    reads = [f"data.max_len={meta['max_len']}", f"data.truncation={meta.get('truncation', 'head')}"]
    started = time.perf_counter()
    student = work / f"{name}-student"
    length = ([f"train.max_steps={args.steps}", "train.epochs=0"] if args.steps else
              [f"train.epochs={args.student_epochs}", "train.max_steps=0"])
    cli("distill", "--output", str(student), sets=[
        f"init={minilm}", f"model.num_layers={args.student_layers}",
        f"distill.teacher={teacher}", "distill.mode=task", "distill.hard_weight=0.5",
        "distill.temperature=2.0", f"data.train={train}", *reads,
        f"train.lr={args.student_lr}", "train.warmup_ratio=0.1", "train.batch_size=16",
        "train.eval_every=0", "train.save_every=0", *common, *length])
    student_s = time.perf_counter() - started
    t_scores, tp = evaluate(teacher, texts, gold)
    s_scores, sp = evaluate(student / "model", texts, gold)
    speed = throughput({"teacher": tp, "student": sp}, texts[:args.speed_examples], args.repeats)
    ratio = s_scores["accuracy"] / t_scores["accuracy"] if t_scores["accuracy"] else None
    speedup = speed["student"]["tokens_per_s"] / speed["teacher"]["tokens_per_s"]
    print(f"{name}: teacher acc {t_scores['accuracy']:.4f} F1 {t_scores['macro_f1']:.4f}, "
          f"student acc {s_scores['accuracy']:.4f} F1 {s_scores['macro_f1']:.4f} "
          f"({ratio:.3f} of the teacher), {speedup:.2f}x the teacher's tokens/s")
    return {"train_examples": len(train.read_text().splitlines()), "test_examples": len(texts),
            "reads": reads,
            "teacher": {**t_scores, "layers": tp.model.config.num_layers, "train_s": teacher_s,
                        "dir": str(teacher), **speed["teacher"]},
            "student": {**s_scores, "layers": sp.model.config.num_layers, "train_s": student_s,
                        **speed["student"]},
            "accuracy_kept": ratio, "speedup": speedup,
            "meets_target": bool(ratio and ratio >= 0.97 and speedup >= 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training cap of each teacher fine-tuning and each distillation")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: spamassassin, 200 train / 100 test examples, "
                             "max_len 64, 20 steps each")
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--teacher", action="append", default=[], metavar="NAME=DIR",
                        help="a fine-tuned teacher to reuse for dataset NAME (its model dir)")
    parser.add_argument("--steps", type=int, default=0, help="fixed steps for both (0: epochs)")
    parser.add_argument("--train-examples", type=int, default=0, help="0 = all")
    parser.add_argument("--test-examples", type=int, default=0, help="0 = all")
    parser.add_argument("--speed-examples", type=int, default=1000,
                        help="test texts the throughput is timed on")
    parser.add_argument("--max-len", type=int, default=0,
                        help="the teachers' max_len (0: the default recipe's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the table's notes (kept in the JSON)")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite the markdown table (with any new --note) and run nothing")
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.minutes, args.steps = args.datasets[:1], 1.0, 20
        args.train_examples, args.test_examples = 200, 100
        args.max_len, args.repeats = 64, 2
    name = args.name or ("distillation_quick" if args.quick else "distillation")
    threads = setup_torch(args.threads)
    out = Path(args.out) if args.out else RESULTS / f"{name}.json"
    previous = json.loads(out.read_text()) if out.is_file() and not args.quick else {}
    results = previous.get("datasets", {})  # a run per dataset adds to the same table
    notes = previous.get("notes", []) + args.note
    if args.table_only:
        write_result(name, {**previous, "notes": notes}, out)
        write_table(out.with_suffix(".md"), results, args, previous.get("threads", threads),
                    notes)
        return
    with tempfile.TemporaryDirectory(prefix="lanistr-distill-") as tmp:
        work = Path(tmp)
        minilm = converted_minilm(work / "minilm")
        for d in args.datasets:
            load = load_average()
            results[d] = {**one_dataset(d, args, work, minilm),
                          "load_average": [load, load_average()]}
            if out.is_file() and not args.quick:  # another invocation's datasets stay
                results = {**json.loads(out.read_text()).get("datasets", {}), **results}
            path = write_result(name, {
                "benchmark": "distillation", "quick": args.quick, "minutes": args.minutes,
                "steps": args.steps, "student_layers": args.student_layers,
                "student_epochs": args.student_epochs, "student_lr": args.student_lr,
                "threads": threads, "machine": machine_info(), "datasets": results,
                "notes": notes,
                "target": "student keeps >= 97% of the teacher's accuracy at >= 2x throughput",
            }, out)
            if not args.quick:
                write_table(out.with_suffix(".md"), results, args, threads, notes)
    if args.quick:
        print("[QUICK SMOKE RUN: a few steps on a small sample, not the issue's target]")
    print(f"wrote {path}")


def write_table(path: Path, results: dict, args, threads: int, notes: list[str]) -> None:
    rows = [f"| dataset | teacher (6 layers) acc / macro-F1 | student ({args.student_layers} layers) acc / macro-F1 "
            "| accuracy kept | tokens/s teacher -> student | speed-up | student train | target |"
            , "|---|---|---|---:|---|---:|---:|---|"]
    for d, r in results.items():
        t, s = r["teacher"], r["student"]
        rows.append(f"| {d} | {t['accuracy']:.4f} / {t['macro_f1']:.4f} | {s['accuracy']:.4f} / "
                    f"{s['macro_f1']:.4f} | {r['accuracy_kept']:.3f} | {t['tokens_per_s']:.0f} -> "
                    f"{s['tokens_per_s']:.0f} | {r['speedup']:.2f}x | {s['train_s'] / 60:.1f} min | "
                    f"{'met' if r['meets_target'] else '**MISSED**'} |")
    text = ("# Distillation: fine-tuned MiniLM teacher vs a distilled half-depth student\n\n"
            "Written by `benchmarks/distillation.py` (whole test sets; throughput on the first "
            f"{args.speed_examples} test texts, {threads} threads, teacher and student timed "
            "interleaved, median of rounds; load averages in `distillation.json`). Student: "
            f"MiniLM's lower {args.student_layers} layers, `lanistr distill` task mode (soft "
            "targets at T=2 plus 0.5 x gold cross-entropy, teacher logits computed once), "
            f"{args.student_epochs} epochs at lr {args.student_lr:g}, reading texts as its "
            "teacher (max_len, truncation). Target (#20): >= 97% of the teacher's accuracy "
            "at >= 2x its tokens/s.\n\n" + "\n".join(rows) + "\n"
            + ("\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes) if notes else ""))
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
